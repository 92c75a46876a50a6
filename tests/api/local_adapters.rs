//! The embedded local adapters against their contracts: the durable queue's Service Bus
//! semantics, the encrypted vault and the application directory, all on one SQLite file
//! with the clock set by the test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use tempfile::TempDir;

use keyturn::adapters::local::store::LocalStore;
use keyturn::domain::clock::Clock;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 0)
        .single()
        .expect("a valid time")
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
