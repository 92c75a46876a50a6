//! The embedded local adapters against their contracts: the durable queue's Service Bus
//! semantics, the encrypted vault and the application directory, all on one SQLite file
//! with the clock set by the test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use tempfile::TempDir;

use keyturn::adapters::local::store::LocalStore;
use keyturn::domain::clock::Clock;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 0)
        .single()
        .expect("a valid time")
}

/// A clock the test moves by hand.
#[derive(Clone)]
struct HandClock(Arc<AtomicI64>);

impl HandClock {
    fn at(start: DateTime<Utc>) -> Self {
        Self(Arc::new(AtomicI64::new(start.timestamp_millis())))
    }

    fn set(&self, at: DateTime<Utc>) {
        self.0.store(at.timestamp_millis(), Ordering::SeqCst);
    }

    fn clock(&self) -> Clock {
        let cell = Arc::clone(&self.0);
        Clock::from_fn(move || {
            DateTime::from_timestamp_millis(cell.load(Ordering::SeqCst)).expect("a valid time")
        })
    }
}

struct Fixture {
    dir: TempDir,
}

impl Fixture {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("keyturn.db")
    }

    fn store(&self) -> LocalStore {
        LocalStore::open(self.db()).expect("open the local store")
    }
}

fn raw_file_contains(path: &Path, needle: &[u8]) -> bool {
    // The WAL holds recent pages until a checkpoint; both files are "the database on disk".
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    [path.to_path_buf(), PathBuf::from(wal)]
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .any(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
}

mod queue {
    use super::*;

    use keyturn::adapters::local::queue::{
        LocalQueue, MAX_DELIVERY_COUNT_EXCEEDED, QueueError, QueueSettings, SendOutcome,
    };
    use keyturn::ports::queue::{JobQueue, OutgoingMessage};

    const LOCK: TimeDelta = TimeDelta::seconds(30);

    fn settings() -> QueueSettings {
        QueueSettings {
            lock_duration: LOCK,
            max_delivery_count: 3,
            duplicate_detection_window: TimeDelta::minutes(10),
        }
    }

    fn queue(store: LocalStore) -> LocalQueue {
        LocalQueue::new(store, "rotations", settings(), Clock::fixed(t0())).expect("queue")
    }

    fn job(id: &str, session: &str) -> OutgoingMessage {
        OutgoingMessage {
            message_id: id.into(),
            session_id: session.into(),
            scheduled_enqueue: None,
            content_type: "application/json",
            body: format!("{{\"job\":\"{id}\"}}").into_bytes(),
        }
    }

    #[tokio::test]
    async fn a_received_message_is_locked_and_completing_it_removes_it() {
        let fixture = Fixture::new();
        let queue = queue(fixture.store());
        queue.send(&job("m1", "s1")).await.expect("send");

        let first = queue
            .receive(t0())
            .await
            .expect("receive")
            .expect("a message");
        let while_locked = queue.receive(t0()).await.expect("receive");
        queue
            .complete(first.lock_token, t0())
            .await
            .expect("complete");

        assert_eq!(first.message_id, "m1");
        assert_eq!(first.session_id, "s1");
        assert_eq!(first.body, b"{\"job\":\"m1\"}");
        assert_eq!(first.delivery_count, 1);
        assert_eq!(first.locked_until, t0() + LOCK);
        assert!(
            while_locked.is_none(),
            "a locked message is not handed out twice"
        );
        assert_eq!(queue.active_count().await.expect("count"), 0);
        assert!(
            queue
                .receive(t0() + LOCK * 2)
                .await
                .expect("receive")
                .is_none()
        );
    }

    #[tokio::test]
    async fn an_expired_lock_redelivers_the_message_with_its_delivery_count_increased() {
        let fixture = Fixture::new();
        let queue = queue(fixture.store());
        queue.send(&job("m1", "s1")).await.expect("send");
        let first = queue
            .receive(t0())
            .await
            .expect("receive")
            .expect("a message");

        let before_expiry = queue
            .receive(t0() + LOCK - TimeDelta::milliseconds(1))
            .await
            .expect("receive");
        let after_expiry = queue
            .receive(t0() + LOCK)
            .await
            .expect("receive")
            .expect("redelivered");
        let stale = queue.complete(first.lock_token, t0() + LOCK).await;

        assert!(before_expiry.is_none());
        assert_eq!(after_expiry.message_id, "m1");
        assert_eq!(after_expiry.delivery_count, first.delivery_count + 1);
        assert_ne!(after_expiry.lock_token, first.lock_token);
        assert!(
            matches!(stale, Err(QueueError::LockLost)),
            "the dead receiver's token no longer settles the message"
        );
    }

    #[tokio::test]
    async fn renewing_a_lock_keeps_the_message_from_being_redelivered() {
        let fixture = Fixture::new();
        let queue = queue(fixture.store());
        queue.send(&job("m1", "s1")).await.expect("send");
        let first = queue
            .receive(t0())
            .await
            .expect("receive")
            .expect("a message");

        let renewed_until = queue
            .renew_lock(first.lock_token, t0() + TimeDelta::seconds(20))
            .await
            .expect("renew");
        let during_renewal = queue
            .receive(t0() + TimeDelta::seconds(40))
            .await
            .expect("receive");
        let late_renewal = queue
            .renew_lock(first.lock_token, t0() + TimeDelta::seconds(51))
            .await;

        assert_eq!(renewed_until, t0() + TimeDelta::seconds(50));
        assert!(during_renewal.is_none());
        assert!(matches!(late_renewal, Err(QueueError::LockLost)));
    }

    #[tokio::test]
    async fn renewing_a_lost_lock_does_not_lock_its_session_again() {
        let fixture = Fixture::new();
        let queue = queue(fixture.store());
        queue.send(&job("m1", "s1")).await.expect("send");
        queue.send(&job("m2", "s1")).await.expect("send");
        let first = queue
            .receive(t0())
            .await
            .expect("receive")
            .expect("a message");

        let late = queue.renew_lock(first.lock_token, t0() + LOCK).await;
        let redelivered = queue
            .receive(t0() + LOCK)
            .await
            .expect("receive")
            .expect("the session is free once the lock expired");

        assert!(matches!(late, Err(QueueError::LockLost)));
        assert_eq!(redelivered.message_id, "m1");
    }

    #[tokio::test]
    async fn expiring_the_locks_of_a_crashed_receiver_redelivers_its_messages_now() {
        let fixture = Fixture::new();
        let queue = queue(fixture.store());
        queue.send(&job("m1", "s1")).await.expect("send");
        queue.send(&job("m2", "s1")).await.expect("send");
        let held = queue
            .receive(t0())
            .await
            .expect("receive")
            .expect("a message");
        assert!(
            queue.receive(t0()).await.expect("receive").is_none(),
            "the session is locked"
        );

        let expired = queue.expire_locks(t0()).await.expect("expire");
        let again = queue
            .receive(t0())
            .await
            .expect("receive")
            .expect("redelivered before the lock's own expiry");

        assert_eq!(expired, 1);
        assert_eq!(again.message_id, held.message_id);
        assert_eq!(again.delivery_count, 2);
        assert!(matches!(
            queue.complete(held.lock_token, t0()).await,
            Err(QueueError::LockLost)
        ));
    }

    #[tokio::test]
    async fn an_abandoned_message_is_redelivered_at_once() {
        let fixture = Fixture::new();
        let queue = queue(fixture.store());
        queue.send(&job("m1", "s1")).await.expect("send");
        let first = queue
            .receive(t0())
            .await
            .expect("receive")
            .expect("a message");

        queue
            .abandon(first.lock_token, t0())
            .await
            .expect("abandon");
        let again = queue
            .receive(t0())
            .await
            .expect("receive")
            .expect("redelivered");

        assert_eq!(again.message_id, "m1");
        assert_eq!(again.delivery_count, 2);
    }

    #[tokio::test]
    async fn a_message_abandoned_max_delivery_times_is_dead_lettered_with_a_reason() {
        let fixture = Fixture::new();
        let queue = queue(fixture.store());
        queue.send(&job("m1", "s1")).await.expect("send");

        let mut deliveries = Vec::new();
        while let Some(received) = queue.receive(t0()).await.expect("receive") {
            deliveries.push(received.delivery_count);
            queue
                .abandon(received.lock_token, t0())
                .await
                .expect("abandon");
        }
        let dead = queue.dead_letters().await.expect("dead letters");

        assert_eq!(deliveries, vec![1, 2, 3]);
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].message_id, "m1");
        assert_eq!(dead[0].reason, MAX_DELIVERY_COUNT_EXCEEDED);
        assert_eq!(dead[0].delivery_count, 3);
        assert_eq!(queue.active_count().await.expect("count"), 0);
    }

    #[tokio::test]
    async fn a_message_whose_last_lock_expires_is_dead_lettered_not_redelivered() {
        let fixture = Fixture::new();
        let queue = queue(fixture.store());
        queue.send(&job("m1", "s1")).await.expect("send");
        let mut now = t0();
        for _ in 0..settings().max_delivery_count {
            queue
                .receive(now)
                .await
                .expect("receive")
                .expect("delivered");
            now += LOCK;
        }

        let after_last_expiry = queue.receive(now).await.expect("receive");
        let dead = queue.dead_letters().await.expect("dead letters");

        assert!(after_last_expiry.is_none());
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].reason, MAX_DELIVERY_COUNT_EXCEEDED);
    }

    #[tokio::test]
    async fn a_receiver_can_dead_letter_a_message_with_its_own_reason() {
        let fixture = Fixture::new();
        let queue = queue(fixture.store());
        queue.send(&job("m1", "s1")).await.expect("send");
        let received = queue
            .receive(t0())
            .await
            .expect("receive")
            .expect("a message");

        queue
            .dead_letter(
                received.lock_token,
                "MalformedJob",
                Some("job version 9 is unknown"),
                t0(),
            )
            .await
            .expect("dead-letter");
        let dead = queue.dead_letters().await.expect("dead letters");

        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].reason, "MalformedJob");
        assert_eq!(
            dead[0].description.as_deref(),
            Some("job version 9 is unknown")
        );
        assert_eq!(dead[0].dead_lettered_at, t0());
        assert!(queue.receive(t0()).await.expect("receive").is_none());
    }

    #[tokio::test]
    async fn a_duplicate_message_id_within_the_window_is_dropped() {
        let fixture = Fixture::new();
        let queue = queue(fixture.store());

        let first = queue.send_at(&job("m1", "s1"), t0()).await.expect("send");
        let duplicate = queue
            .send_at(&job("m1", "s1"), t0() + TimeDelta::minutes(9))
            .await
            .expect("send");
        let other = queue.send_at(&job("m2", "s1"), t0()).await.expect("send");

        assert!(matches!(first, SendOutcome::Enqueued { .. }));
        assert_eq!(duplicate, SendOutcome::Duplicate);
        assert!(matches!(other, SendOutcome::Enqueued { .. }));
        assert_eq!(queue.active_count().await.expect("count"), 2);
    }

    #[tokio::test]
    async fn a_message_id_is_accepted_again_once_the_window_has_passed() {
        let fixture = Fixture::new();
        let queue = queue(fixture.store());
        queue.send_at(&job("m1", "s1"), t0()).await.expect("send");
        let first = queue
            .receive(t0())
            .await
            .expect("receive")
            .expect("a message");
        queue
            .complete(first.lock_token, t0())
            .await
            .expect("complete");

        let later = queue
            .send_at(&job("m1", "s1"), t0() + TimeDelta::minutes(10))
            .await
            .expect("send");

        assert!(matches!(later, SendOutcome::Enqueued { .. }));
    }

    #[tokio::test]
    async fn two_consumers_on_one_session_are_serialised() {
        let fixture = Fixture::new();
        let store = fixture.store();
        let consumer_a = queue(store.clone());
        let consumer_b = queue(fixture.store());
        consumer_a.send(&job("m1", "object-1")).await.expect("send");
        consumer_a.send(&job("m2", "object-1")).await.expect("send");

        let a = consumer_a
            .receive(t0())
            .await
            .expect("receive")
            .expect("a message");
        let b_while_a_holds = consumer_b.receive(t0()).await.expect("receive");
        consumer_a
            .complete(a.lock_token, t0())
            .await
            .expect("complete");
        let b_after = consumer_b
            .receive(t0())
            .await
            .expect("receive")
            .expect("the session is free again");

        assert_eq!(a.message_id, "m1");
        assert!(
            b_while_a_holds.is_none(),
            "the second consumer must wait while the session is locked"
        );
        assert_eq!(
            b_after.message_id, "m2",
            "messages of a session arrive in order"
        );
    }

    #[tokio::test]
    async fn different_sessions_are_worked_on_in_parallel() {
        let fixture = Fixture::new();
        let consumer_a = queue(fixture.store());
        let consumer_b = queue(fixture.store());
        consumer_a.send(&job("m1", "object-1")).await.expect("send");
        consumer_a.send(&job("m2", "object-1")).await.expect("send");
        consumer_a.send(&job("m3", "object-2")).await.expect("send");

        let a = consumer_a
            .receive(t0())
            .await
            .expect("receive")
            .expect("a message");
        let b = consumer_b
            .receive(t0())
            .await
            .expect("receive")
            .expect("a message");

        assert_eq!(a.session_id, "object-1");
        assert_eq!(b.session_id, "object-2", "object-1's second message waits");
        assert_eq!(b.message_id, "m3");
    }

    #[tokio::test]
    async fn concurrent_receivers_on_one_session_never_hold_it_together() {
        let fixture = Fixture::new();
        let sender = queue(fixture.store());
        for n in 0..8 {
            sender
                .send(&job(&format!("m{n}"), "object-1"))
                .await
                .expect("send");
        }
        let receivers: Vec<LocalQueue> = (0..4).map(|_| queue(fixture.store())).collect();

        let handles: Vec<_> = receivers
            .into_iter()
            .map(|receiver| tokio::spawn(async move { receiver.receive(t0()).await }))
            .collect();
        let mut held = 0;
        for handle in handles {
            if handle.await.expect("task").expect("receive").is_some() {
                held += 1;
            }
        }

        assert_eq!(held, 1, "exactly one receiver holds the session");
    }

    #[tokio::test]
    async fn a_scheduled_message_is_invisible_until_it_is_due() {
        let fixture = Fixture::new();
        let queue = queue(fixture.store());
        let due = t0() + TimeDelta::days(7);
        let mut retire = job("retire-1", "s1");
        retire.scheduled_enqueue = Some(due);
        queue.send_at(&retire, t0()).await.expect("send");

        let before = queue
            .receive(due - TimeDelta::milliseconds(1))
            .await
            .expect("receive");
        let next_due = queue.next_due(t0()).await.expect("next due");
        let at_due = queue.receive(due).await.expect("receive").expect("due now");

        assert!(before.is_none());
        assert_eq!(next_due, Some(due));
        assert_eq!(at_due.message_id, "retire-1");
        assert_eq!(at_due.delivery_count, 1);
    }

    #[tokio::test]
    async fn messages_and_locks_survive_reopening_the_file() {
        let fixture = Fixture::new();
        let first_process = queue(fixture.store());
        first_process.send(&job("m1", "s1")).await.expect("send");
        let held = first_process
            .receive(t0())
            .await
            .expect("receive")
            .expect("a message");
        drop(first_process);

        let second_process = queue(fixture.store());
        let while_locked = second_process.receive(t0()).await.expect("receive");
        let after_crash = second_process
            .receive(t0() + LOCK)
            .await
            .expect("receive")
            .expect("the dead process's lock expired");

        assert!(while_locked.is_none(), "the lock is durable too");
        assert_eq!(after_crash.message_id, held.message_id);
        assert_eq!(after_crash.delivery_count, 2);
    }
}

mod vault {
    use super::*;

    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use keyturn::adapters::local::crypto::{
        CryptoError, KEY_FILE_NAME, VaultKey, WRONG_KEY_MESSAGE,
    };
    use keyturn::adapters::local::store::StoreError;
    use keyturn::adapters::local::vault::{
        LocalCertificatePolicy, LocalVault, LocalVaultEventKind, VaultError,
    };
    use keyturn::domain::names::{OBJECT_VERSION_LEN, ObjectName, VaultUrl};
    use keyturn::domain::secret::SecretValue;
    use keyturn::events::keyvault::{KeyVaultEvent, KeyVaultEventKind};
    use keyturn::ports::FailureKind;
    use keyturn::ports::source::SecretSource;
    use keyturn::ports::vault::{
        CertificateOperation, CertificateStore, NewSecretVersion, SecretStore,
    };

    const PLAINTEXT: &str = "correct-horse-battery-staple-4f9a1c";

    fn key(byte: u8) -> VaultKey {
        VaultKey::from_base64(&STANDARD.encode([byte; 32]), "test").expect("key")
    }

    fn kv() -> VaultUrl {
        VaultUrl::parse("https://kv-local.vault.azure.net/").expect("vault url")
    }

    fn name(text: &str) -> ObjectName {
        ObjectName::parse(text).expect("name")
    }

    async fn open(fixture: &Fixture, clock: &HandClock) -> LocalVault {
        LocalVault::open(fixture.store(), key(1), clock.clock())
            .await
            .expect("open the vault")
    }

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[tokio::test]
    async fn a_deleted_secrets_name_stays_taken_until_its_retention_ends() {
        let fixture = Fixture::new();
        let clock = HandClock::at(t0());
        let vault = open(&fixture, &clock).await;
        let pending = name("keyturn-pending-11111111-1111-4111-8111-111111111111");
        vault
            .set_secret(
                &kv(),
                &pending,
                &SecretValue::new("v1"),
                NewSecretVersion::default(),
            )
            .await
            .expect("set");

        vault.delete_secret(&kv(), &pending).await.expect("deleted");

        assert_eq!(
            vault
                .secret_properties(&kv(), &pending, None)
                .await
                .expect("read"),
            None,
            "a deleted secret is gone"
        );
        let again = vault
            .set_secret(
                &kv(),
                &pending,
                &SecretValue::new("v2"),
                NewSecretVersion::default(),
            )
            .await
            .expect_err("Key Vault answers 409 ObjectIsDeletedButRecoverable");
        assert_eq!(again.kind, FailureKind::Conflict);
        assert!(
            again.context.contains("ObjectIsDeletedButRecoverable"),
            "{again}"
        );
        assert_eq!(
            vault
                .delete_secret(&kv(), &pending)
                .await
                .map_err(|e| e.kind),
            Err(FailureKind::NotFound)
        );
        // After the retention period (Key Vault's default, 90 days) the name is free.
        clock.set(t0() + TimeDelta::days(91));
        vault
            .set_secret(
                &kv(),
                &pending,
                &SecretValue::new("v3"),
                NewSecretVersion::default(),
            )
            .await
            .expect("purged, the name is free again");
    }

    #[tokio::test]
    async fn versions_keep_their_attributes_and_the_latest_is_current() {
        let fixture = Fixture::new();
        let clock = HandClock::at(t0());
        let vault = open(&fixture, &clock).await;
        let expires = t0() + TimeDelta::days(90);

        let first = vault
            .set_secret(
                &kv(),
                &name("db-password"),
                &SecretValue::new("one"),
                NewSecretVersion {
                    content_type: Some("text/plain".into()),
                    not_before: Some(t0()),
                    expires: Some(expires),
                    tags: tags(&[("keyturn-kind", "generated")]),
                },
            )
            .await
            .expect("first version");
        clock.set(t0() + TimeDelta::hours(1));
        let second = vault
            .set_secret(
                &kv(),
                &name("DB-Password"),
                &SecretValue::new("two"),
                NewSecretVersion::default(),
            )
            .await
            .expect("second version");

        let current = vault
            .secret(&kv(), &name("db-password"), None)
            .await
            .expect("read")
            .expect("exists");
        let old = vault
            .secret(&kv(), &name("db-password"), first.id.version())
            .await
            .expect("read")
            .expect("exists");
        let versions = vault
            .list_versions(&kv(), &name("db-password"))
            .await
            .expect("versions");
        let listed = vault.list_secrets(&kv()).await.expect("list");

        let first_version = first.id.version().expect("versioned").as_str();
        assert_eq!(first_version.len(), OBJECT_VERSION_LEN);
        assert!(first_version.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(first.tags, tags(&[("keyturn-kind", "generated")]));
        assert_eq!(first.expires, Some(expires));
        assert_eq!(first.not_before, Some(t0()));
        assert_eq!(first.content_type.as_deref(), Some("text/plain"));
        assert_eq!(first.created, Some(t0()));
        assert!(first.enabled);
        assert!(!first.managed);
        assert_eq!(current.value.expose(), "two");
        assert_eq!(current.properties.id, second.id);
        assert_eq!(old.value.expose(), "one");
        assert_eq!(versions.len(), 2);
        assert_eq!(listed.len(), 1, "one secret, listed at its current version");
        assert_eq!(listed[0].id, second.id);
        assert!(
            vault
                .secret(&kv(), &name("other"), None)
                .await
                .expect("read")
                .is_none()
        );
    }

    #[tokio::test]
    async fn updating_tags_changes_only_that_versions_tags() {
        let fixture = Fixture::new();
        let clock = HandClock::at(t0());
        let vault = open(&fixture, &clock).await;
        let expires = Some(t0() + TimeDelta::days(30));
        let set = vault
            .set_secret(
                &kv(),
                &name("api-key"),
                &SecretValue::new("v"),
                NewSecretVersion {
                    expires,
                    tags: tags(&[("a", "1")]),
                    ..NewSecretVersion::default()
                },
            )
            .await
            .expect("set");
        clock.set(t0() + TimeDelta::minutes(5));

        let updated = vault
            .update_tags(
                &kv(),
                &name("api-key"),
                set.id.version().expect("versioned"),
                tags(&[("keyturn-last-error", "403")]),
            )
            .await
            .expect("update");
        let missing = vault
            .update_tags(
                &kv(),
                &name("no-such-secret"),
                set.id.version().expect("versioned"),
                BTreeMap::new(),
            )
            .await
            .expect_err("missing");

        assert_eq!(updated.tags, tags(&[("keyturn-last-error", "403")]));
        assert_eq!(updated.expires, expires);
        assert_eq!(updated.created, Some(t0()));
        assert_eq!(updated.updated, Some(t0() + TimeDelta::minutes(5)));
        assert_eq!(missing.kind, FailureKind::NotFound);
    }

    #[tokio::test]
    async fn more_tags_than_key_vault_allows_are_refused_and_nothing_is_written() {
        let fixture = Fixture::new();
        let clock = HandClock::at(t0());
        let vault = open(&fixture, &clock).await;
        let sixteen: BTreeMap<String, String> =
            (0..16).map(|n| (format!("t{n}"), "v".into())).collect();

        let error = vault
            .set_secret(
                &kv(),
                &name("s"),
                &SecretValue::new("v"),
                NewSecretVersion {
                    tags: sixteen,
                    ..NewSecretVersion::default()
                },
            )
            .await
            .expect_err("too many tags");

        assert_eq!(error.kind, FailureKind::Invalid);
        assert!(vault.list_secrets(&kv()).await.expect("list").is_empty());
    }

    #[tokio::test]
    async fn values_are_encrypted_on_disk() {
        let fixture = Fixture::new();
        let clock = HandClock::at(t0());
        let vault = open(&fixture, &clock).await;
        vault
            .set_secret(
                &kv(),
                &name("db-password"),
                &SecretValue::new(PLAINTEXT),
                NewSecretVersion::default(),
            )
            .await
            .expect("set");
        vault
            .create_certificate(
                &kv(),
                &name("web"),
                LocalCertificatePolicy::self_signed("localhost", &["localhost"], 30),
                BTreeMap::new(),
                t0(),
            )
            .await
            .expect("certificate");

        let read_back = vault
            .secret(&kv(), &name("db-password"), None)
            .await
            .expect("read")
            .expect("exists");

        assert_eq!(read_back.value.expose(), PLAINTEXT);
        assert!(
            !raw_file_contains(&fixture.db(), PLAINTEXT.as_bytes()),
            "the secret value is in the database file in plain text"
        );
        assert!(
            !raw_file_contains(&fixture.db(), b"PRIVATE KEY"),
            "a certificate's private key is in the database file in plain text"
        );
        assert!(
            raw_file_contains(&fixture.db(), b"db-password"),
            "the check reads the right files: names are stored in clear"
        );
    }

    #[tokio::test]
    async fn a_store_opened_with_another_key_is_refused_with_a_clear_error() {
        let fixture = Fixture::new();
        let clock = HandClock::at(t0());
        let vault = open(&fixture, &clock).await;
        vault
            .set_secret(
                &kv(),
                &name("s"),
                &SecretValue::new(PLAINTEXT),
                NewSecretVersion::default(),
            )
            .await
            .expect("set");
        drop(vault);

        let error = LocalVault::open(fixture.store(), key(2), clock.clock())
            .await
            .expect_err("another key");

        assert!(matches!(error, VaultError::Key(CryptoError::WrongKey)));
        assert_eq!(error.to_string(), WRONG_KEY_MESSAGE);
    }

    #[tokio::test]
    async fn a_ciphertext_moved_to_another_row_does_not_open() {
        let fixture = Fixture::new();
        let clock = HandClock::at(t0());
        let vault = open(&fixture, &clock).await;
        for (secret, value) in [("alpha", "value-a"), ("beta", "value-b")] {
            vault
                .set_secret(
                    &kv(),
                    &name(secret),
                    &SecretValue::new(value),
                    NewSecretVersion::default(),
                )
                .await
                .expect("set");
        }
        let store = fixture.store();
        store
            .call(|c| {
                c.execute_batch(
                    "CREATE TEMP TABLE moved AS SELECT nonce, ciphertext FROM vault_secret_versions WHERE name = 'alpha';
                     UPDATE vault_secret_versions SET nonce = X'00', ciphertext = X'00' WHERE name = 'alpha';
                     UPDATE vault_secret_versions SET nonce = (SELECT nonce FROM moved), ciphertext = (SELECT ciphertext FROM moved) WHERE name = 'beta';",
                )
                .map_err(StoreError::sqlite("moving a ciphertext"))
            })
            .await
            .expect("tamper");

        let error = vault
            .secret(&kv(), &name("beta"), None)
            .await
            .expect_err("a moved ciphertext");

        assert_eq!(error.kind, FailureKind::Invalid);
        assert!(error.to_string().contains(WRONG_KEY_MESSAGE), "{error}");
        assert!(!error.to_string().contains("value-a"));
    }

    #[tokio::test]
    async fn every_record_gets_its_own_nonce_and_the_store_refuses_a_repeat() {
        let fixture = Fixture::new();
        let clock = HandClock::at(t0());
        let vault = open(&fixture, &clock).await;
        for _ in 0..50 {
            vault
                .set_secret(
                    &kv(),
                    &name("same"),
                    &SecretValue::new("same value"),
                    NewSecretVersion::default(),
                )
                .await
                .expect("set");
        }
        let store = fixture.store();

        let (rows, distinct_nonces, distinct_ciphertexts): (i64, i64, i64) = store
            .call(|c| {
                c.query_row(
                    "SELECT COUNT(*), COUNT(DISTINCT nonce), COUNT(DISTINCT ciphertext) FROM vault_secret_versions",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .map_err(StoreError::sqlite("counting nonces"))
            })
            .await
            .expect("count");
        let repeat = store
            .call(|c| {
                c.execute(
                    "UPDATE vault_secret_versions SET nonce = (SELECT nonce FROM vault_secret_versions ORDER BY id LIMIT 1) \
                     WHERE id = (SELECT MAX(id) FROM vault_secret_versions)",
                    [],
                )
                .map_err(StoreError::sqlite("repeating a nonce"))
            })
            .await;

        assert_eq!(rows, 50);
        assert_eq!(distinct_nonces, 50);
        assert_eq!(
            distinct_ciphertexts, 50,
            "the same value seals differently each time"
        );
        assert!(repeat.is_err(), "the store must refuse a repeated nonce");
    }

    #[tokio::test]
    async fn without_a_setting_the_key_file_is_created_once_and_reused() {
        let fixture = Fixture::new();
        let clock = HandClock::at(t0());
        let db = fixture.db();
        let created = LocalVault::key_from_setting_or_file(None, &db).expect("create key file");
        let vault = LocalVault::open(fixture.store(), created, clock.clock())
            .await
            .expect("open");
        vault
            .set_secret(
                &kv(),
                &name("s"),
                &SecretValue::new(PLAINTEXT),
                NewSecretVersion::default(),
            )
            .await
            .expect("set");
        drop(vault);

        let empty_setting = SecretValue::new("");
        let reloaded = LocalVault::key_from_setting_or_file(Some(&empty_setting), &db)
            .expect("reuse key file");
        let reopened = LocalVault::open(fixture.store(), reloaded, clock.clock())
            .await
            .expect("reopen with the same key");
        let other_setting = SecretValue::new(STANDARD.encode([9u8; 32]));
        let from_setting =
            LocalVault::key_from_setting_or_file(Some(&other_setting), &db).expect("setting key");
        let refused = LocalVault::open(fixture.store(), from_setting, clock.clock()).await;

        let value = reopened
            .secret(&kv(), &name("s"), None)
            .await
            .expect("read")
            .expect("exists");
        assert_eq!(value.value.expose(), PLAINTEXT);
        assert!(fixture.dir.path().join(KEY_FILE_NAME).is_file());
        assert!(matches!(
            refused,
            Err(VaultError::Key(CryptoError::WrongKey))
        ));
    }

    #[tokio::test]
    async fn the_secret_source_serves_only_live_secrets() {
        let fixture = Fixture::new();
        let clock = HandClock::at(t0());
        let vault = open(&fixture, &clock).await;
        let cases = [
            ("live", None, Some(t0() + TimeDelta::days(1)), true),
            ("expired", None, Some(t0()), false),
            ("not-yet", Some(t0() + TimeDelta::seconds(1)), None, false),
            ("forever", None, None, true),
        ];
        for (secret, not_before, expires, _) in cases {
            vault
                .set_secret(
                    &kv(),
                    &name(secret),
                    &SecretValue::new(format!("value-of-{secret}")),
                    NewSecretVersion {
                        not_before,
                        expires,
                        content_type: Some("text/plain".into()),
                        ..NewSecretVersion::default()
                    },
                )
                .await
                .expect("set");
        }
        let source = vault.source(kv());

        for (secret, _, expires, served) in cases {
            let fetched = source.fetch(&name(secret), t0()).await.expect("fetch");
            assert_eq!(fetched.is_some(), served, "{secret}");
            if let Some(fetched) = fetched {
                assert_eq!(fetched.value.expose(), format!("value-of-{secret}"));
                assert_eq!(fetched.expires, expires);
                assert_eq!(fetched.content_type.as_deref(), Some("text/plain"));
                assert_eq!(
                    fetched.version.as_ref().map(String::len),
                    Some(OBJECT_VERSION_LEN)
                );
            }
        }
        assert!(
            source
                .fetch(&name("absent"), t0())
                .await
                .expect("fetch")
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_self_signed_certificate_renews_into_a_new_version_at_once() {
        let fixture = Fixture::new();
        let clock = HandClock::at(t0());
        let vault = open(&fixture, &clock).await;
        let created = vault
            .create_certificate(
                &kv(),
                &name("web"),
                LocalCertificatePolicy::self_signed("localhost", &["localhost"], 365),
                tags(&[("keyturn-kind", "certificate")]),
                t0(),
            )
            .await
            .expect("create");
        let backing = vault
            .secret(&kv(), &name("web"), None)
            .await
            .expect("read")
            .expect("backing secret");
        clock.set(t0() + TimeDelta::days(340));

        let issuer = vault.issuer(&kv(), &name("web")).await.expect("issuer");
        let operation = vault
            .begin_renewal(&kv(), &name("web"))
            .await
            .expect("renew");
        let status = vault
            .renewal_status(&kv(), &name("web"))
            .await
            .expect("status");
        let renewed = vault
            .certificate_properties(&kv(), &name("web"))
            .await
            .expect("read")
            .expect("exists");
        let overwrite = vault
            .set_secret(
                &kv(),
                &name("web"),
                &SecretValue::new("x"),
                NewSecretVersion::default(),
            )
            .await
            .expect_err("a managed secret");

        assert_eq!(issuer, "Self");
        assert_eq!(created.expires, Some(t0() + TimeDelta::days(365)));
        assert_eq!(created.tags, tags(&[("keyturn-kind", "certificate")]));
        assert_eq!(created.x5t_hex.as_ref().map(String::len), Some(40));
        assert!(backing.properties.managed);
        assert_eq!(backing.properties.id.version(), created.id.version());
        assert!(backing.value.expose().contains("BEGIN CERTIFICATE"));
        let CertificateOperation::Completed { version } = &operation else {
            panic!("renewal should complete locally, got {operation:?}");
        };
        assert_eq!(status, operation);
        assert_eq!(renewed.id.version(), Some(version));
        assert_ne!(renewed.id.version(), created.id.version());
        assert_eq!(renewed.not_before, Some(t0() + TimeDelta::days(340)));
        assert_eq!(renewed.expires, Some(t0() + TimeDelta::days(340 + 365)));
        assert_ne!(renewed.x5t_hex, created.x5t_hex);
        assert_eq!(renewed.tags, created.tags);
        assert_eq!(overwrite.kind, FailureKind::Conflict);
        assert_eq!(vault.list_certificates(&kv()).await.expect("list").len(), 1);
    }

    #[tokio::test]
    async fn a_certificate_from_another_issuer_fails_renewal_locally() {
        let fixture = Fixture::new();
        let clock = HandClock::at(t0());
        let vault = open(&fixture, &clock).await;
        let mut policy =
            LocalCertificatePolicy::self_signed("partner.example", &["partner.example"], 30);
        policy.issuer = "DigiCert".into();
        vault
            .create_certificate(&kv(), &name("partner"), policy, BTreeMap::new(), t0())
            .await
            .expect("create");

        let issuer = vault.issuer(&kv(), &name("partner")).await.expect("issuer");
        let operation = vault
            .begin_renewal(&kv(), &name("partner"))
            .await
            .expect("renew");
        let unknown = vault
            .issuer(&kv(), &name("absent"))
            .await
            .expect_err("absent");

        assert_eq!(issuer, "DigiCert");
        assert_eq!(
            operation,
            CertificateOperation::Failed {
                code: "UnsupportedIssuer".into()
            }
        );
        assert_eq!(unknown.kind, FailureKind::NotFound);
    }

    #[tokio::test]
    async fn the_vault_raises_each_key_vault_event_once_per_version() {
        let fixture = Fixture::new();
        let clock = HandClock::at(t0());
        let vault = open(&fixture, &clock).await;
        let expires = t0() + TimeDelta::days(40);
        let set = vault
            .set_secret(
                &kv(),
                &name("app-secret"),
                &SecretValue::new(PLAINTEXT),
                NewSecretVersion {
                    expires: Some(expires),
                    ..NewSecretVersion::default()
                },
            )
            .await
            .expect("set");

        let created = vault.pending_events(t0()).await.expect("events");
        for event in &created {
            vault.mark_raised(event, t0()).await.expect("mark");
        }
        let quiet = vault
            .pending_events(t0() + TimeDelta::days(9))
            .await
            .expect("events");
        let near = vault
            .pending_events(t0() + TimeDelta::days(10))
            .await
            .expect("events");
        for event in &near {
            vault.mark_raised(event, t0()).await.expect("mark");
        }
        let reopened = open(&fixture, &clock).await;
        let near_again = reopened
            .pending_events(t0() + TimeDelta::days(11))
            .await
            .expect("events");
        let expired = reopened.pending_events(expires).await.expect("events");

        let kinds = |events: &[keyturn::adapters::local::vault::LocalVaultEvent]| {
            events.iter().map(|e| e.kind).collect::<Vec<_>>()
        };
        assert_eq!(
            kinds(&created),
            vec![LocalVaultEventKind::NewVersionCreated]
        );
        assert_eq!(created[0].object, set.id);
        assert!(
            quiet.is_empty(),
            "nothing is due between creation and 30 days before expiry"
        );
        assert_eq!(kinds(&near), vec![LocalVaultEventKind::NearExpiry]);
        assert_eq!(near[0].event_time, expires - TimeDelta::days(30));
        assert!(
            near_again.is_empty(),
            "a raised event is durable across reopening"
        );
        assert_eq!(kinds(&expired), vec![LocalVaultEventKind::Expired]);
        assert_eq!(expired[0].event_type(), "Microsoft.KeyVault.SecretExpired");
    }

    #[tokio::test]
    async fn raised_events_read_like_key_vaults_own_in_event_grid_schema() {
        let fixture = Fixture::new();
        let clock = HandClock::at(t0());
        let vault = open(&fixture, &clock).await;
        let set = vault
            .set_secret(
                &kv(),
                &name("newsecret"),
                &SecretValue::new(PLAINTEXT),
                NewSecretVersion {
                    not_before: Some(t0()),
                    expires: Some(t0() + TimeDelta::days(365)),
                    ..NewSecretVersion::default()
                },
            )
            .await
            .expect("set");
        vault
            .create_certificate(
                &kv(),
                &name("old-cert"),
                LocalCertificatePolicy::self_signed("old", &["old.localhost"], 1),
                BTreeMap::new(),
                t0() - TimeDelta::days(2),
            )
            .await
            .expect("an expired certificate");
        let official = super::super::helpers::fixture(
            "keyvault-events/eventgrid-schema.secret_new_version_created.json",
        );

        let events = vault.pending_events(t0()).await.expect("events");
        let secret_event = events
            .iter()
            .find(|e| e.object == set.id)
            .expect("the secret's event")
            .to_event_grid();
        let parsed = KeyVaultEvent::parse(&secret_event).expect("keyturn's own parser reads it");
        let again = vault.pending_events(t0()).await.expect("events");
        let certificate_kinds: Vec<String> = events
            .iter()
            .filter(|e| e.object.name().as_str() == "old-cert")
            .map(|e| e.event_type())
            .collect();

        let keys = |v: &serde_json::Value| {
            v.as_object()
                .expect("an object")
                .keys()
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(&secret_event), keys(&official));
        assert_eq!(keys(&secret_event["data"]), keys(&official["data"]));
        assert_eq!(
            secret_event["eventType"],
            "Microsoft.KeyVault.SecretNewVersionCreated"
        );
        assert_eq!(secret_event["data"]["VaultName"], "kv-local");
        assert_eq!(secret_event["data"]["NBF"], t0().timestamp().to_string());
        assert_eq!(
            *parsed.kind(),
            KeyVaultEventKind::from_event_type("Microsoft.KeyVault.SecretNewVersionCreated")
        );
        assert_eq!(parsed.object_name(), Some(&name("newsecret")));
        assert_eq!(parsed.version(), set.id.version());
        assert_eq!(parsed.expires(), Some(t0() + TimeDelta::days(365)));
        assert_eq!(
            again.iter().map(|e| e.id()).collect::<Vec<_>>(),
            events.iter().map(|e| e.id()).collect::<Vec<_>>(),
            "an event raised again keeps its id"
        );
        assert_eq!(
            certificate_kinds,
            vec![
                "Microsoft.KeyVault.CertificateNewVersionCreated".to_owned(),
                "Microsoft.KeyVault.CertificateExpired".to_owned()
            ]
        );
        assert!(
            !events.iter().any(|e| e.object.name().as_str() == "old-cert"
                && e.object.object_type() == keyturn::domain::names::ObjectType::Secret),
            "a certificate's backing secret raises certificate events only"
        );
    }
}

mod directory {
    use super::*;

    use keyturn::adapters::local::directory::{
        EXPIRED_CLIENT_SECRET, INVALID_CLIENT_SECRET, LocalDirectory, SECRET_TEXT_LEN,
        UNKNOWN_APPLICATION,
    };
    use keyturn::domain::ids::{AppId, DeviceId, DirectoryObjectId, KeyId};
    use keyturn::domain::secret::SecretValue;
    use keyturn::ports::FailureKind;
    use keyturn::ports::directory::{
        AlternativeSecurityId, CredentialIssuer, Device, DeviceDirectory, ProofError, TokenProver,
    };

    fn rejected(code: &str) -> ProofError {
        ProofError::Rejected { code: code.into() }
    }

    #[tokio::test]
    async fn add_password_returns_the_secret_once_and_stores_only_a_hash() {
        let fixture = Fixture::new();
        let clock = HandClock::at(t0());
        let directory = LocalDirectory::new(fixture.store(), clock.clock());
        let app = directory.create_application("demo-app").await.expect("app");

        let issued = directory
            .add_password(&app.object_id, "keyturn job-1", t0() + TimeDelta::days(90))
            .await
            .expect("add");
        let listed = directory
            .password_credentials(&app.object_id)
            .await
            .expect("list");
        let found = directory.application(&app.app_id).await.expect("find");

        let secret = issued.secret.expose();
        assert_eq!(secret.len(), SECRET_TEXT_LEN);
        assert_eq!(
            issued.credential.hint, None,
            "no part of the secret is kept in clear"
        );
        assert_eq!(listed, vec![issued.credential.clone()]);
        assert_eq!(
            issued.credential.display_name.as_deref(),
            Some("keyturn job-1")
        );
        assert_eq!(issued.credential.end, Some(t0() + TimeDelta::days(90)));
        assert_eq!(found, Some(app));
        assert!(
            !raw_file_contains(&fixture.db(), secret.as_bytes()),
            "the secret text is in the database file"
        );
        assert!(raw_file_contains(&fixture.db(), b"keyturn job-1"));
    }

    #[tokio::test]
    async fn prove_accepts_a_valid_secret_and_refuses_wrong_expired_and_removed_ones() {
        let fixture = Fixture::new();
        let clock = HandClock::at(t0());
        let directory = LocalDirectory::new(fixture.store(), clock.clock());
        let app = directory.create_application("demo-app").await.expect("app");
        let end = t0() + TimeDelta::days(30);
        let kept = directory
            .add_password(&app.object_id, "kept", end)
            .await
            .expect("add");
        let removed = directory
            .add_password(&app.object_id, "removed", end)
            .await
            .expect("add");

        let valid = directory.prove(&app.app_id, &kept.secret).await;
        let wrong = directory
            .prove(&app.app_id, &SecretValue::new("guess"))
            .await;
        let other_app = directory.prove(&AppId::new_random(), &kept.secret).await;
        directory
            .remove_password(&app.object_id, &removed.credential.key_id)
            .await
            .expect("remove");
        let after_removal = directory.prove(&app.app_id, &removed.secret).await;
        clock.set(end);
        let expired = directory.prove(&app.app_id, &kept.secret).await;

        assert_eq!(valid, Ok(()));
        assert_eq!(wrong, Err(rejected(INVALID_CLIENT_SECRET)));
        assert_eq!(other_app, Err(rejected(UNKNOWN_APPLICATION)));
        assert_eq!(after_removal, Err(rejected(INVALID_CLIENT_SECRET)));
        assert_eq!(expired, Err(rejected(EXPIRED_CLIENT_SECRET)));
        assert_eq!(
            directory
                .password_credentials(&app.object_id)
                .await
                .expect("list")
                .iter()
                .map(|c| c.key_id)
                .collect::<Vec<_>>(),
            vec![kept.credential.key_id]
        );
    }

    #[tokio::test]
    async fn removing_an_unknown_key_id_is_not_found() {
        let fixture = Fixture::new();
        let clock = HandClock::at(t0());
        let directory = LocalDirectory::new(fixture.store(), clock.clock());
        let app = directory.create_application("demo-app").await.expect("app");
        let issued = directory
            .add_password(&app.object_id, "once", t0() + TimeDelta::days(1))
            .await
            .expect("add");
        directory
            .remove_password(&app.object_id, &issued.credential.key_id)
            .await
            .expect("remove");

        let twice = directory
            .remove_password(&app.object_id, &issued.credential.key_id)
            .await
            .expect_err("already removed");
        let unknown = directory
            .remove_password(&app.object_id, &KeyId::new_random())
            .await
            .expect_err("unknown");

        assert_eq!(twice.kind, FailureKind::NotFound);
        assert_eq!(unknown.kind, FailureKind::NotFound);
    }

    #[tokio::test]
    async fn unknown_applications_and_past_end_dates_are_refused() {
        let fixture = Fixture::new();
        let clock = HandClock::at(t0());
        let directory = LocalDirectory::new(fixture.store(), clock.clock());
        let app = directory.create_application("demo-app").await.expect("app");
        let stranger = DirectoryObjectId::new_random();

        let no_app = directory
            .add_password(&stranger, "x", t0() + TimeDelta::days(1))
            .await
            .expect_err("no such app");
        let no_list = directory
            .password_credentials(&stranger)
            .await
            .expect_err("no such app");
        let past = directory
            .add_password(&app.object_id, "x", t0())
            .await
            .expect_err("ends now");
        let absent = directory
            .application(&AppId::new_random())
            .await
            .expect("lookup");

        assert_eq!(no_app.kind, FailureKind::NotFound);
        assert_eq!(no_list.kind, FailureKind::NotFound);
        assert_eq!(past.kind, FailureKind::Invalid);
        assert!(absent.is_none());
        assert!(
            directory
                .password_credentials(&app.object_id)
                .await
                .expect("list")
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_new_credential_is_refused_until_the_propagation_delay_has_passed() {
        let fixture = Fixture::new();
        let clock = HandClock::at(t0());
        let directory = LocalDirectory::new(fixture.store(), clock.clock())
            .with_propagation_delay(TimeDelta::seconds(10));
        let app = directory.create_application("demo-app").await.expect("app");
        let issued = directory
            .add_password(&app.object_id, "new", t0() + TimeDelta::days(1))
            .await
            .expect("add");

        clock.set(t0() + TimeDelta::seconds(9));
        let too_soon = directory.prove(&app.app_id, &issued.secret).await;
        clock.set(t0() + TimeDelta::seconds(10));
        let propagated = directory.prove(&app.app_id, &issued.secret).await;

        assert_eq!(too_soon, Err(rejected(INVALID_CLIENT_SECRET)));
        assert_eq!(propagated, Ok(()));
    }

    #[tokio::test]
    async fn a_flapping_directory_accepts_refuses_then_accepts_a_propagated_credential() {
        let fixture = Fixture::new();
        let clock = HandClock::at(t0());
        let directory = LocalDirectory::new(fixture.store(), clock.clock())
            .with_propagation_delay(TimeDelta::seconds(10))
            .with_flapping(true);
        let app = directory.create_application("demo-app").await.expect("app");
        let issued = directory
            .add_password(&app.object_id, "new", t0() + TimeDelta::days(1))
            .await
            .expect("add");

        let mut answers = Vec::new();
        for seconds in [5, 10, 20, 30, 40, 50] {
            clock.set(t0() + TimeDelta::seconds(seconds));
            answers.push(directory.prove(&app.app_id, &issued.secret).await.is_ok());
        }

        assert_eq!(answers, [false, true, false, true, true, true]);
    }

    #[tokio::test]
    async fn devices_come_back_with_their_alternative_security_ids() {
        let fixture = Fixture::new();
        let directory = LocalDirectory::new(fixture.store(), Clock::fixed(t0()));
        let device = Device {
            device_id: DeviceId::new_random(),
            account_enabled: true,
            alternative_security_ids: vec![AlternativeSecurityId {
                kind: 2,
                identity_provider: None,
                key: b"X509:<SHA1-TP-PUBKEY>abc".to_vec(),
            }],
            is_compliant: Some(true),
            is_managed: None,
        };
        directory.add_device(&device).await.expect("add");
        let mut disabled = device.clone();
        disabled.account_enabled = false;

        let found = directory.device(&device.device_id).await.expect("lookup");
        directory.add_device(&disabled).await.expect("replace");
        let replaced = directory.device(&device.device_id).await.expect("lookup");
        let absent = directory
            .device(&DeviceId::new_random())
            .await
            .expect("lookup");

        assert_eq!(found, Some(device));
        assert_eq!(replaced, Some(disabled));
        assert!(absent.is_none());
    }
}
