//! The job queue's contract (sending rotation jobs): Service Bus against the stand-in,
//! the local queue over SQLite and the in-memory queue. What arrived is read from the
//! broker's side: the stand-in's record, the local queue's table, the double's list.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::http::{ClientOptions, RetryOptions};
use chrono::{DateTime, TimeDelta, Utc};
use keyturn_standins::{QueueOptions, Standins};
use tempfile::TempDir;

use keyturn::adapters::azure::servicebus::ServiceBusQueue;
use keyturn::adapters::local::queue::{LocalQueue, QueueSettings};
use keyturn::adapters::local::store::LocalStore;
use keyturn::domain::clock::Clock;
use keyturn::ports::FailureKind;
use keyturn::ports::queue::{JobQueue, MAX_MESSAGE_ID_LEN, OutgoingMessage};
use keyturn_doubles::{Faults, MemoryQueue};

use super::contract;

const QUEUE: &str = "rotations";
/// Service Bus takes message bodies up to 256 KiB on the standard tier.
const MAX_BODY: usize = 256 * 1024;

/// A message as the broker holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrived {
    pub message_id: String,
    pub session_id: String,
    /// When it becomes visible, if later than when it arrived.
    pub scheduled: Option<DateTime<Utc>>,
    pub content_type: String,
    pub body: Vec<u8>,
}

/// One queue adapter under test.
#[async_trait]
pub trait QueueFixture: Send + Sync + 'static {
    fn queue(&self) -> Arc<dyn JobQueue>;
    /// The adapter's own clock.
    fn now(&self) -> DateTime<Utc>;
    /// What the broker holds, in arrival order.
    async fn arrived(&self) -> Vec<Arrived>;
}

fn job(message_id: &str, scheduled: Option<DateTime<Utc>>) -> OutgoingMessage {
    OutgoingMessage {
        message_id: message_id.to_owned(),
        session_id: "kv-prod/secret/billing".to_owned(),
        scheduled_enqueue: scheduled,
        content_type: "application/json",
        body: br#"{"version":1,"kind":"rotate"}"#.to_vec(),
    }
}

async fn jobs_arrive_with_their_broker_properties(fixture: impl QueueFixture) {
    let queue = fixture.queue();
    let at = DateTime::from_timestamp(fixture.now().timestamp(), 0).expect("a valid time")
        + TimeDelta::days(2);

    queue.send(&job("job-1", Some(at))).await.expect("sent");
    queue.send(&job("job-2", None)).await.expect("sent");

    let arrived = fixture.arrived().await;
    assert_eq!(arrived.len(), 2);
    assert_eq!(
        arrived[0],
        Arrived {
            message_id: "job-1".into(),
            session_id: "kv-prod/secret/billing".into(),
            scheduled: Some(at),
            content_type: "application/json".into(),
            body: br#"{"version":1,"kind":"rotate"}"#.to_vec(),
        }
    );
    assert_eq!(arrived[1].message_id, "job-2");
    assert_eq!(arrived[1].scheduled, None);
}

/// The broker's duplicate detection: a retried send is accepted and kept once.
async fn a_duplicate_message_id_is_accepted_and_kept_once(fixture: impl QueueFixture) {
    let queue = fixture.queue();

    queue.send(&job("job-1", None)).await.expect("sent");
    queue
        .send(&job("job-1", None))
        .await
        .expect("a duplicate is accepted");
    queue.send(&job("job-2", None)).await.expect("sent");

    let ids: Vec<String> = fixture
        .arrived()
        .await
        .into_iter()
        .map(|m| m.message_id)
        .collect();
    assert_eq!(ids, ["job-1", "job-2"]);
}

async fn ids_and_bodies_beyond_service_bus_limits_are_refused(fixture: impl QueueFixture) {
    let queue = fixture.queue();
    let too_long = "x".repeat(MAX_MESSAGE_ID_LEN + 1);
    let cases = [
        OutgoingMessage {
            message_id: String::new(),
            ..job("unused", None)
        },
        OutgoingMessage {
            session_id: too_long.clone(),
            ..job("job-1", None)
        },
        OutgoingMessage {
            message_id: too_long,
            ..job("unused", None)
        },
        OutgoingMessage {
            body: vec![b'x'; MAX_BODY + 1],
            ..job("job-2", None)
        },
    ];

    for message in cases {
        let error = queue.send(&message).await.expect_err("refused");
        assert_eq!(error.kind, FailureKind::Invalid, "{}", error.context);
    }
    let longest = OutgoingMessage {
        message_id: "m".repeat(MAX_MESSAGE_ID_LEN),
        session_id: "s".repeat(MAX_MESSAGE_ID_LEN),
        body: vec![b' '; MAX_BODY],
        ..job("unused", None)
    };
    queue.send(&longest).await.expect("the limits themselves");
    assert_eq!(
        fixture.arrived().await.len(),
        1,
        "only the message within limits"
    );
}

macro_rules! queue_suite {
    ($($adapter:ident: $fixture:expr),+ $(,)?) => {
        $(
            contract!($adapter: $fixture =>
                jobs_arrive_with_their_broker_properties,
                a_duplicate_message_id_is_accepted_and_kept_once,
                ids_and_bodies_beyond_service_bus_limits_are_refused,
            );
        )+
    };
}

queue_suite!(
    service_bus: super::ServiceBusFixture::start(),
    local_queue: super::LocalFixture::open(),
    memory_queue: super::MemoryFixture::new(),
);

/// Service Bus against the stand-in: a session queue with duplicate detection, as
/// keyturn's Bicep creates it.
struct ServiceBusFixture {
    standins: Standins,
    queue: Arc<ServiceBusQueue>,
}

impl ServiceBusFixture {
    async fn start() -> Self {
        let standins = Standins::start()
            .await
            .expect("the stand-ins start on loopback");
        standins.servicebus().create_queue(
            QUEUE,
            QueueOptions {
                requires_session: true,
                duplicate_detection_window: Some(Duration::from_secs(600)),
            },
        );
        let options = ClientOptions {
            retry: RetryOptions::none(),
            ..standins.client_options()
        };
        let base = url::Url::parse(standins.servicebus().url().as_str()).expect("valid URL");
        let queue =
            ServiceBusQueue::with_base_url(base, QUEUE, standins.credential(), Some(options))
                .expect("valid sender");
        Self {
            standins,
            queue: Arc::new(queue),
        }
    }
}

#[async_trait]
impl QueueFixture for ServiceBusFixture {
    fn queue(&self) -> Arc<dyn JobQueue> {
        self.queue.clone()
    }

    fn now(&self) -> DateTime<Utc> {
        self.standins.now()
    }

    async fn arrived(&self) -> Vec<Arrived> {
        self.standins
            .servicebus()
            .messages(QUEUE)
            .into_iter()
            .map(|m| Arrived {
                message_id: m.message_id.unwrap_or_default(),
                session_id: m.session_id.unwrap_or_default(),
                scheduled: m.scheduled_enqueue_time_utc,
                content_type: m.content_type.unwrap_or_default(),
                body: m.body,
            })
            .collect()
    }
}

/// The local queue over a SQLite file, read back from its table.
struct LocalFixture {
    dir: TempDir,
    queue: Arc<LocalQueue>,
}

impl LocalFixture {
    async fn open() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = LocalStore::open(dir.path().join("keyturn.db")).expect("the store opens");
        let settings = QueueSettings {
            lock_duration: TimeDelta::seconds(30),
            max_delivery_count: 3,
            duplicate_detection_window: TimeDelta::minutes(10),
        };
        let queue = LocalQueue::new(store, QUEUE, settings, Clock::system()).expect("a queue");
        Self {
            dir,
            queue: Arc::new(queue),
        }
    }
}

#[async_trait]
impl QueueFixture for LocalFixture {
    fn queue(&self) -> Arc<dyn JobQueue> {
        self.queue.clone()
    }

    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    async fn arrived(&self) -> Vec<Arrived> {
        let connection = rusqlite::Connection::open(self.dir.path().join("keyturn.db"))
            .expect("the store file opens");
        let mut statement = connection
            .prepare(
                "SELECT message_id, session_id, content_type, body, enqueued_at, visible_at \
                 FROM queue_messages WHERE queue = ?1 ORDER BY sequence",
            )
            .expect("a query");
        statement
            .query_map([QUEUE], |row| {
                let enqueued: i64 = row.get(4)?;
                let visible: i64 = row.get(5)?;
                Ok(Arrived {
                    message_id: row.get(0)?,
                    session_id: row.get(1)?,
                    scheduled: (visible > enqueued)
                        .then(|| DateTime::from_timestamp_millis(visible).expect("a time")),
                    content_type: row.get(2)?,
                    body: row.get(3)?,
                })
            })
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("readable rows")
    }
}

/// The in-memory queue the engine's tests drive.
struct MemoryFixture {
    queue: Arc<MemoryQueue>,
}

impl MemoryFixture {
    async fn new() -> Self {
        Self {
            queue: Arc::new(MemoryQueue::new(Faults::new())),
        }
    }
}

#[async_trait]
impl QueueFixture for MemoryFixture {
    fn queue(&self) -> Arc<dyn JobQueue> {
        self.queue.clone()
    }

    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    async fn arrived(&self) -> Vec<Arrived> {
        self.queue
            .messages()
            .into_iter()
            .map(|m| Arrived {
                message_id: m.message_id,
                session_id: m.session_id,
                scheduled: m.scheduled_enqueue,
                content_type: m.content_type.to_owned(),
                body: m.body,
            })
            .collect()
    }
}
