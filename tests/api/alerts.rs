//! The alerts engine over the inventory: thresholds crossed once per route and remembered
//! across runs and restarts (the SQLite ledger reopened), routing to owners, tags and the
//! default route, what an alert says to do, failed deliveries tried again, and the digest.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use tempfile::TempDir;

use keyturn::adapters::local::alert_ledger::LocalAlertLedger;
use keyturn::adapters::local::store::LocalStore;
use keyturn::adapters::notify::WebhookClient;
use keyturn::adapters::notify::WebhookUrl;
use keyturn::adapters::notify::cloudevents::CloudEventsNotifier;
use keyturn::alerts::engine::{ALERT_LEASE, DIGEST_LEASE};
use keyturn::alerts::engine::{AlertEngine, AlertSettings, Channels};
use keyturn::alerts::routes::{RouteName, parse_routes};
use keyturn::alerts::routing::RoutingSettings;
use keyturn::alerts::thresholds::Thresholds;
use keyturn::domain::clock::Clock;
use keyturn::domain::contact::MailAddress;
use keyturn::domain::ids::{AppId, DirectoryObjectId, KeyId};
use keyturn::domain::inventory::{
    CredentialHandle, CredentialKind, CredentialSource, FindingKind, InventoryCredential, Owner,
    Scope, ScopeFinding, SweepId,
};
use keyturn::domain::secret::SecretValue;
use keyturn::ports::PortError;
use keyturn::ports::inventory::InventoryStore;
use keyturn::ports::notify::{Notice, NoticeKind, Notifier, Severity};
use keyturn::rotation::tags::PolicyDefaults;
use keyturn_doubles::{ManualClock, MemoryInventory};
use keyturn_standins::{Receiver, Receivers};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 6, 6, 0, 0)
        .single()
        .expect("a time")
}

/// A channel that keeps what it was given.
#[derive(Debug, Default)]
struct Recording {
    name: String,
    seen: Mutex<Vec<(Notice, Vec<MailAddress>)>>,
}

impl Recording {
    fn named(name: &str) -> Arc<Self> {
        Arc::new(Self {
            name: name.to_owned(),
            ..Self::default()
        })
    }

    fn seen(&self) -> Vec<(Notice, Vec<MailAddress>)> {
        self.seen.lock().expect("not poisoned").clone()
    }
}

#[async_trait]
impl Notifier for Recording {
    fn channel(&self) -> &str {
        &self.name
    }

    async fn notify(&self, notice: &Notice, people: &[MailAddress]) -> Result<(), PortError> {
        self.seen
            .lock()
            .expect("not poisoned")
            .push((notice.clone(), people.to_vec()));
        Ok(())
    }
}

fn vault_secret(
    name: &str,
    expires_in_days: Option<i64>,
    tags: &[(&str, &str)],
) -> InventoryCredential {
    let mut secret = crate::helpers::kv_prod_secret(
        name,
        expires_in_days.map(|d| now() + TimeDelta::days(d)),
        tags,
        now(),
    );
    secret.managed = tags.iter().any(|(k, _)| *k == "keyturn-kind");
    secret
}

fn app_password(expires_in_days: i64, owners: Vec<Owner>) -> InventoryCredential {
    InventoryCredential {
        source: CredentialSource::Application {
            object_id: DirectoryObjectId::parse("00000000-0000-4000-8000-000000000001")
                .expect("an object id"),
            app_id: AppId::parse("11111111-0000-4000-8000-000000000001").expect("an app id"),
            display_name: Some("Payroll".to_owned()),
        },
        kind: CredentialKind::PasswordCredential,
        name: "payroll-prod".to_owned(),
        handle: CredentialHandle::DirectoryCredential {
            key_id: KeyId::parse("22222222-0000-4000-8000-000000000001").expect("a key id"),
        },
        owners,
        ..vault_secret("payroll-prod", Some(expires_in_days), &[])
    }
}

fn owner(name: &str, mail: Option<&str>) -> Owner {
    Owner {
        display_name: Some(name.to_owned()),
        mail: mail.map(str::to_owned),
        ..Owner::default()
    }
}

struct Rig {
    inventory: MemoryInventory,
    path: std::path::PathBuf,
    ledger: LocalAlertLedger,
    channels: Channels,
    ops: Arc<Recording>,
    owners: Arc<Recording>,
    settings: AlertSettings,
    /// When the engine claims and confirms (tests move it past a lease).
    time: ManualClock,
    clock: Clock,
    _dir: TempDir,
}

impl Rig {
    fn new(default_route: Option<&str>) -> Self {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("keyturn.db");
        let ledger = LocalAlertLedger::new(LocalStore::open(&path).expect("the store opens"));
        let routes = parse_routes("ops=slack:hook-ops;owners=mail;platform=teams:hook-platform")
            .expect("routes");
        let ops = Recording::named("ops");
        let owners = Recording::named("owners");
        let platform = Recording::named("platform");
        let time = ManualClock::at(now());
        let mut channels: Channels = BTreeMap::new();
        channels.insert(route("ops"), ops.clone());
        channels.insert(route("owners"), owners.clone());
        channels.insert(route("platform"), platform);
        Self {
            inventory: MemoryInventory::new(),
            path,
            ledger,
            channels,
            ops,
            owners,
            settings: AlertSettings {
                thresholds: Thresholds::default(),
                routing: RoutingSettings::new(&routes, default_route.map(route)),
                defaults: PolicyDefaults::new(90, 30, 7).expect("defaults"),
                digest_every: TimeDelta::days(7),
                digest_horizon: TimeDelta::days(30),
            },
            clock: time.clock(),
            time,
            _dir: dir,
        }
    }

    fn engine(&self) -> AlertEngine<'_> {
        AlertEngine {
            inventory: &self.inventory,
            ledger: &self.ledger,
            channels: &self.channels,
            settings: &self.settings,
            clock: &self.clock,
        }
    }

    async fn put(&self, credentials: &[InventoryCredential]) {
        self.inventory
            .put_credentials(credentials)
            .await
            .expect("written");
    }
}

fn route(name: &str) -> RouteName {
    RouteName::parse(name).expect("a route name")
}

#[tokio::test]
async fn an_alert_goes_out_once_per_threshold_and_is_remembered_across_restarts() {
    let mut rig = Rig::new(Some("ops"));
    rig.put(&[vault_secret("db-password", Some(10), &[])]).await;

    let first = rig.engine().alert(now()).await.expect("ran");
    let again = rig
        .engine()
        .alert(now() + TimeDelta::hours(6))
        .await
        .expect("ran");
    rig.ledger = LocalAlertLedger::new(LocalStore::open(&rig.path).expect("reopened"));
    let restarted = rig
        .engine()
        .alert(now() + TimeDelta::days(1))
        .await
        .expect("ran");
    let next_threshold = rig
        .engine()
        .alert(now() + TimeDelta::days(4))
        .await
        .expect("ran");

    assert_eq!((first.due, first.sent, first.already_sent), (1, 1, 0));
    assert_eq!((again.sent, again.already_sent), (0, 1));
    assert_eq!((restarted.sent, restarted.already_sent), (0, 1));
    assert_eq!(
        next_threshold.sent, 1,
        "6 days left crosses the 7-day threshold"
    );
    let seen = rig.ops.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[0].0.detail["threshold"], 14,
        "10 days left: the 14-day alert only"
    );
    assert_eq!(seen[1].0.detail["threshold"], 7);
    assert_ne!(seen[0].0.id, seen[1].0.id);
}

#[tokio::test]
async fn a_renewed_credential_starts_its_thresholds_again() {
    let rig = Rig::new(Some("ops"));
    rig.put(&[vault_secret("db-password", Some(10), &[])]).await;
    rig.engine().alert(now()).await.expect("ran");

    rig.put(&[vault_secret("db-password", Some(9), &[])]).await;
    let renewed = rig.engine().alert(now()).await.expect("ran");

    assert_eq!(renewed.sent, 1, "a new expiry is a new alert");
}

#[tokio::test]
async fn owners_are_mailed_tagged_routes_carry_it_and_the_rest_goes_to_the_default_route() {
    let rig = Rig::new(Some("ops"));
    rig.put(&[
        app_password(
            5,
            vec![
                owner("Alice", Some("alice@contoso.com")),
                owner("Nomail", None),
            ],
        ),
        vault_secret(
            "tagged",
            Some(20),
            &[("keyturn-owner", "platform,carol@contoso.com")],
        ),
        vault_secret("orphan", Some(50), &[]),
        vault_secret("far-away", Some(200), &[]),
        vault_secret("never-expires", None, &[]),
        InventoryCredential {
            enabled: false,
            ..vault_secret("disabled", Some(3), &[])
        },
    ])
    .await;

    let report = rig.engine().alert(now()).await.expect("ran");

    assert_eq!(
        report.due, 3,
        "far-away, never-expiring and disabled are not due"
    );
    assert_eq!(
        report.sent, 4,
        "owners' mail twice, platform once, ops once"
    );
    assert_eq!(report.routing_problems, 1, "the owner without mail");
    let mailed: Vec<(String, Vec<String>)> = rig
        .owners
        .seen()
        .into_iter()
        .map(|(n, p)| {
            (
                n.detail["name"].as_str().expect("a name").to_owned(),
                p.iter().map(|a| a.as_str().to_owned()).collect(),
            )
        })
        .collect();
    assert!(mailed.contains(&(
        "payroll-prod".to_owned(),
        vec!["alice@contoso.com".to_owned()]
    )));
    assert!(mailed.contains(&("tagged".to_owned(), vec!["carol@contoso.com".to_owned()])));
    let ops: Vec<String> = rig
        .ops
        .seen()
        .into_iter()
        .map(|(n, _)| n.detail["name"].as_str().expect("a name").to_owned())
        .collect();
    assert_eq!(ops, ["orphan"]);
}

#[tokio::test]
async fn without_a_default_route_an_ownerless_alert_is_counted_as_unrouted() {
    let rig = Rig::new(None);
    rig.put(&[vault_secret("orphan", Some(3), &[])]).await;

    let report = rig.engine().alert(now()).await.expect("ran");

    assert_eq!((report.due, report.sent, report.unrouted), (1, 0, 1));
}

#[tokio::test]
async fn alerts_say_when_keyturn_rotates_a_managed_credential_and_how_to_manage_the_others() {
    let rig = Rig::new(Some("ops"));
    rig.put(&[
        vault_secret(
            "rotates-later",
            Some(25),
            &[
                ("keyturn-kind", "generated"),
                ("keyturn-rotate-before-days", "7"),
            ],
        ),
        vault_secret("due-now", Some(12), &[("keyturn-kind", "generated")]),
        vault_secret(
            "failing",
            Some(2),
            &[
                ("keyturn-kind", "generated"),
                (
                    "keyturn-last-error",
                    "Graph refused addPassword: missing permission",
                ),
            ],
        ),
        vault_secret("unmanaged", Some(40), &[]),
        app_password(6, vec![]),
    ])
    .await;

    rig.engine().alert(now()).await.expect("ran");

    let by_name: BTreeMap<String, Notice> = rig
        .ops
        .seen()
        .into_iter()
        .map(|(n, _)| (n.detail["name"].as_str().expect("a name").to_owned(), n))
        .collect();
    let actions = |name: &str| by_name[name].actions.join(" | ");
    assert!(
        actions("rotates-later")
            .contains("Nothing to do: keyturn rotates it on 2026-12-24 (7 days before expiry"),
        "{}",
        actions("rotates-later")
    );
    assert!(
        actions("due-now").contains("keyturn rotates it at its next sweep: it has been due since")
    );
    assert!(actions("failing").contains("last rotation of it failed: Graph refused addPassword"));
    assert!(actions("unmanaged").contains(
        "keyturn-kind=generated, keyturn-validity-days=90, keyturn-rotate-before-days=30"
    ));
    assert!(actions("payroll-prod").contains(
        "keyturn-kind=entra-app-secret, keyturn-app-id=11111111-0000-4000-8000-000000000001"
    ));
    assert!(actions("payroll-prod").contains("federated identity credential"));
    assert_eq!(by_name["failing"].severity, Severity::Critical);
    assert_eq!(by_name["unmanaged"].severity, Severity::Info);
    assert_eq!(by_name["due-now"].kind, NoticeKind::Expiring);
}

#[tokio::test]
async fn an_expired_credential_gets_the_on_expiry_alert() {
    let rig = Rig::new(Some("ops"));
    rig.put(&[vault_secret("gone", Some(-2), &[])]).await;

    rig.engine().alert(now()).await.expect("ran");

    let seen = rig.ops.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0.kind, NoticeKind::Expired);
    assert_eq!(seen[0].0.detail["threshold"], 0);
    assert!(seen[0].0.title.ends_with("has expired"));
}

#[tokio::test]
async fn a_failed_delivery_is_not_recorded_and_goes_out_on_the_next_run() {
    let receivers = Receivers::start().await.expect("receivers start");
    let mut rig = Rig::new(Some("ops"));
    let url =
        WebhookUrl::parse(&SecretValue::new(receivers.url(Receiver::CloudEvents))).expect("a URL");
    let client = WebhookClient::new(Some(receivers.http_client())).expect("a client");
    rig.channels.insert(
        route("ops"),
        Arc::new(CloudEventsNotifier::new("ops", None, url, client)),
    );
    rig.put(&[vault_secret("db-password", Some(10), &[])]).await;
    receivers.fail_next(Receiver::CloudEvents, 503, None);

    let failed = rig.engine().alert(now()).await.expect("ran");
    let retried = rig.engine().alert(now()).await.expect("ran");

    assert_eq!((failed.sent, failed.failed.len()), (0, 1));
    assert_eq!(failed.failed[0].route, "ops");
    assert_eq!(retried.sent, 1);
    let events = receivers.received(Receiver::CloudEvents);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].body["type"], "io.keyturn.credential.expiring");
}

#[tokio::test]
async fn the_digest_goes_out_once_a_week_with_what_expires_fails_and_is_unmanaged() {
    let rig = Rig::new(Some("ops"));
    let mut many: Vec<InventoryCredential> = (0..25)
        .map(|i| vault_secret(&format!("soon-{i:02}"), Some(2 + i), &[]))
        .collect();
    many.push(vault_secret(
        "managed-late",
        Some(200),
        &[("keyturn-kind", "generated")],
    ));
    many.push(vault_secret(
        "managed-failing",
        Some(100),
        &[
            ("keyturn-kind", "generated"),
            ("keyturn-last-error", "boom"),
        ],
    ));
    many.push(vault_secret("expired", Some(-1), &[]));
    rig.put(&many).await;
    rig.inventory
        .put_finding(&ScopeFinding::new(
            Scope::Tenant,
            FindingKind::AccessDenied,
            "kv-locked",
            "HTTP 403",
            now(),
            SweepId::parse("s1").expect("an id"),
        ))
        .await
        .expect("written");

    let first = rig.engine().digest(now()).await.expect("ran");
    let same_week = rig
        .engine()
        .digest(now() + TimeDelta::days(1))
        .await
        .expect("ran");
    let next_week = rig
        .engine()
        .digest(now() + TimeDelta::days(7))
        .await
        .expect("ran");

    assert_eq!(
        (
            first.sent,
            same_week.sent,
            same_week.already_sent,
            next_week.sent
        ),
        (1, 0, 1, 1)
    );
    let (digest, people) = rig.ops.seen().remove(0);
    assert!(people.is_empty());
    assert_eq!(digest.kind, NoticeKind::Digest);
    assert_eq!(
        digest.detail["expiring"], 25,
        "2 to 26 days out, all within 30"
    );
    assert_eq!(digest.detail["expired"], 1);
    assert_eq!(digest.detail["failing"], 1);
    assert_eq!(digest.detail["unmanaged"], 26);
    assert_eq!(digest.detail["scanErrors"], 1);
    assert!(
        digest.actions[0].contains("expired"),
        "soonest first: {:?}",
        digest.actions[0]
    );
    assert!(digest.actions.iter().any(|a| a.contains("… and 6 more")));
}

/// A channel whose instance stops while sending: it says it was reached, then never
/// answers (the test drops the engine's run there, as a crash or a recycled host would,
/// after the claim and before anything is confirmed or given back).
#[derive(Debug, Default)]
struct Stops {
    reached: tokio::sync::Notify,
}

#[async_trait]
impl Notifier for Stops {
    fn channel(&self) -> &str {
        "ops"
    }

    async fn notify(&self, _notice: &Notice, _people: &[MailAddress]) -> Result<(), PortError> {
        self.reached.notify_one();
        std::future::pending().await
    }
}

#[tokio::test]
async fn an_alert_whose_sender_stopped_is_sent_once_by_the_next_run_after_the_lease() {
    let mut rig = Rig::new(Some("ops"));
    rig.put(&[vault_secret("db-password", Some(10), &[])]).await;
    let stops = Arc::new(Stops::default());
    rig.channels.insert(route("ops"), stops.clone());
    {
        let engine = rig.engine();
        tokio::select! {
            ran = engine.alert(now()) => panic!("the sender was to stop: {ran:?}"),
            () = stops.reached.notified() => {}
        }
    }
    rig.channels.insert(route("ops"), rig.ops.clone());

    rig.time.advance(std::time::Duration::from_secs(60));
    let while_claimed = rig.engine().alert(now()).await.expect("ran");
    rig.time.advance(
        (ALERT_LEASE - TimeDelta::seconds(60) + TimeDelta::seconds(1))
            .to_std()
            .expect("a duration"),
    );
    let after_lease = rig.engine().alert(now()).await.expect("ran");
    let reopened = Rig {
        ledger: LocalAlertLedger::new(LocalStore::open(&rig.path).expect("reopened")),
        ..rig
    };
    let again = reopened.engine().alert(now()).await.expect("ran");

    assert_eq!(
        (
            while_claimed.sent,
            while_claimed.in_flight,
            while_claimed.already_sent
        ),
        (0, 1, 0),
        "a live claim is another instance sending: {while_claimed:?}"
    );
    assert_eq!(
        (
            after_lease.sent,
            after_lease.taken_over,
            after_lease.in_flight
        ),
        (1, 1, 0),
        "{after_lease:?}"
    );
    assert_eq!((again.sent, again.already_sent), (0, 1), "{again:?}");
    let seen = reopened.ops.seen();
    assert_eq!(seen.len(), 1, "sent exactly once: {seen:?}");
    assert_eq!(seen[0].0.detail["threshold"], 14);
}

#[tokio::test]
async fn a_digest_whose_sender_stopped_is_sent_once_by_the_next_run_after_the_lease() {
    let mut rig = Rig::new(Some("ops"));
    rig.put(&[vault_secret("db-password", Some(10), &[])]).await;
    let stops = Arc::new(Stops::default());
    rig.channels.insert(route("ops"), stops.clone());
    {
        let engine = rig.engine();
        tokio::select! {
            ran = engine.digest(now()) => panic!("the sender was to stop: {ran:?}"),
            () = stops.reached.notified() => {}
        }
    }
    rig.channels.insert(route("ops"), rig.ops.clone());

    rig.time.advance(
        (DIGEST_LEASE - TimeDelta::seconds(1))
            .to_std()
            .expect("a duration"),
    );
    let while_claimed = rig.engine().digest(now()).await.expect("ran");
    rig.time.advance(std::time::Duration::from_secs(1));
    let after_lease = rig.engine().digest(now()).await.expect("ran");
    let again = rig.engine().digest(now()).await.expect("ran");

    assert_eq!(
        (while_claimed.sent, while_claimed.in_flight),
        (0, 1),
        "{while_claimed:?}"
    );
    assert_eq!(
        (after_lease.sent, after_lease.taken_over),
        (1, 1),
        "{after_lease:?}"
    );
    assert_eq!((again.sent, again.already_sent), (0, 1), "{again:?}");
    let seen = rig.ops.seen();
    assert_eq!(seen.len(), 1, "one digest: {seen:?}");
    assert_eq!(seen[0].0.kind, NoticeKind::Digest);
}

/// One client secret kept in a managed vault secret is two rows of the inventory with one
/// expiry: its alert goes out once per threshold, as the application's credential (to its
/// owners, saying keyturn rotates it through the secret, failing when the secret says its
/// rotation failed, and to the route the secret's owner tag names), and the digest counts
/// it once. A managed secret whose credential is not in the inventory alerts on its own.
#[tokio::test]
async fn a_client_secret_kept_in_a_vault_is_alerted_once_as_the_application_credential() {
    let rig = Rig::new(Some("ops"));
    let mut credential = app_password(12, vec![owner("Ada", Some("ada@example.com"))]);
    credential.managed = true;
    let (app_id, key_id) = credential.adoption_key().expect("a client secret");
    let (app_id, key_id) = (app_id.to_string(), key_id.to_string());
    let holding = vault_secret(
        "payroll-client-secret",
        Some(12),
        &[
            ("keyturn-kind", "entra-app-secret"),
            ("keyturn-app-id", &app_id),
            ("keyturn-key-id", &key_id),
            ("keyturn-last-error", "Graph refused addPassword"),
            ("keyturn-owner", "platform"),
        ],
    );
    // Names a credential the directory listing did not return.
    let orphan = vault_secret(
        "orphan-client-secret",
        Some(12),
        &[
            ("keyturn-kind", "entra-app-secret"),
            ("keyturn-app-id", &app_id),
            ("keyturn-key-id", "33333333-0000-4000-8000-000000000001"),
        ],
    );
    rig.put(&[credential.clone(), holding.clone(), orphan.clone()])
        .await;

    let report = rig.engine().alert(now()).await.expect("ran");
    let again = rig.engine().alert(now()).await.expect("ran");

    // The pair once (to its owners, and the secret's tag routes it to platform too), the
    // orphan on its own (to the default route).
    assert_eq!(report.due, 2, "{report:?}");
    let mailed = rig.owners.seen();
    assert_eq!(mailed.len(), 1, "{mailed:?}");
    let (notice, people) = &mailed[0];
    assert_eq!(notice.subject.as_deref(), Some(credential.id().as_str()));
    assert_eq!(people.len(), 1);
    assert_eq!(
        notice.severity,
        Severity::Critical,
        "the secret's rotation failed"
    );
    let said = notice.actions.join(" ");
    assert!(said.contains("Graph refused addPassword"), "{said}");
    assert!(
        said.contains("(through the Key Vault secret that holds it)"),
        "{said}"
    );
    assert_eq!(report.sent_by_route.get("platform"), Some(&1), "{report:?}");
    let ops = rig.ops.seen();
    assert_eq!(ops.len(), 1, "{ops:?}");
    assert_eq!(ops[0].0.subject.as_deref(), Some(orphan.id().as_str()));
    let subjects: Vec<String> = [rig.owners.seen(), rig.ops.seen()]
        .concat()
        .iter()
        .filter_map(|(n, _)| n.subject.clone())
        .collect();
    assert!(
        !subjects.contains(&holding.id().to_string()),
        "the secret is not alerted on its own: {subjects:?}"
    );
    assert_eq!((again.sent, again.due), (0, 2));

    let digest = rig.engine().digest(now()).await.expect("ran");
    assert_eq!(digest.sent, 1);
    let (digest, _) = rig.ops.seen().pop().expect("the digest");
    assert_eq!(digest.kind, NoticeKind::Digest);
    assert_eq!(digest.detail["total"], 2, "the pair counts once");
    assert_eq!(digest.detail["expiring"], 2);
    assert_eq!(
        digest.detail["failing"], 1,
        "the pair's rotation is failing"
    );
    assert!(
        !digest
            .actions
            .iter()
            .any(|a| a.contains("payroll-client-secret")),
        "{:?}",
        digest.actions
    );
    assert!(digest.actions.iter().any(|a| a.contains("payroll-prod")));
}

/// A client secret kept in a managed vault secret is rotated on that secret's policy: its
/// alert says when from the secret's `keyturn-rotate-before-days`, not the default.
#[tokio::test]
async fn a_client_secret_kept_in_a_vault_is_due_when_the_holding_secrets_policy_says() {
    let rig = Rig::new(Some("ops"));
    let mut credential = app_password(25, vec![owner("Ada", Some("ada@example.com"))]);
    credential.managed = true;
    let (app_id, key_id) = credential.adoption_key().expect("a client secret");
    let (app_id, key_id) = (app_id.to_string(), key_id.to_string());
    let holding = vault_secret(
        "payroll-client-secret",
        Some(25),
        &[
            ("keyturn-kind", "entra-app-secret"),
            ("keyturn-app-id", &app_id),
            ("keyturn-key-id", &key_id),
            ("keyturn-rotate-before-days", "7"),
        ],
    );
    rig.put(&[credential.clone(), holding]).await;

    rig.engine().alert(now()).await.expect("ran");

    let mailed = rig.owners.seen();
    assert_eq!(mailed.len(), 1, "{mailed:?}");
    let said = mailed[0].0.actions.join(" ");
    // Due 30 days before expiry by default, which has passed; 7 days by the secret's tag.
    assert!(
        said.contains(
            "Nothing to do: keyturn rotates it (through the Key Vault secret that holds it) on 2026-12-24 (7 days before expiry"
        ),
        "{said}"
    );
}
