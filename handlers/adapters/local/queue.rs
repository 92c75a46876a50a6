//! The embedded durable queue on the local SQLite file: the job queue's sender, and the
//! receiver local mode's pump uses, with the Service Bus semantics keyturn relies on.
//!
//! - Peek-lock: [`LocalQueue::receive`] locks a message for the lock duration and adds
//!   one to its delivery count; [`LocalQueue::renew_lock`] extends the lock;
//!   [`LocalQueue::complete`] deletes it; [`LocalQueue::abandon`] releases it for
//!   redelivery. A lock nobody renews expires, so a receiver that died (a killed
//!   process) never holds a message for longer than one lock duration.
//! - A message delivered `max_delivery_count` times and then abandoned (or whose lock
//!   expired) is dead-lettered with reason `MaxDeliveryCountExceeded`, as Service Bus does.
//! - Duplicate detection: a second message with a `MessageId` seen within the window is
//!   dropped silently, as Service Bus drops it.
//! - Sessions: while a message of a session is locked, no other message of that session
//!   is handed out, so one session is worked on by one receiver at a time.
//! - Scheduled enqueue time: a message is invisible until it is due.
//!
//! Every operation is one `BEGIN IMMEDIATE` transaction and takes `now`, so concurrent
//! receivers (tasks or processes) take turns and tests set the clock.

use chrono::{DateTime, TimeDelta, Utc};
use rusqlite::{OptionalExtension, Transaction, params};
use uuid::Uuid;

use crate::adapters::local::store::{LocalStore, StoreError};
use crate::domain::clock::Clock;
use crate::ports::queue::{
    DUPLICATE_DETECTION_WINDOW, JobQueue, MAX_DELIVERY_COUNT, MAX_MESSAGE_ID_LEN, OutgoingMessage,
};
use crate::ports::{FailureKind, PortError};

/// Service Bus's default lock duration (`LockDuration` PT1M), not the five minutes the
/// Bicep deploys ([`crate::ports::queue::LOCK_DURATION`]), on purpose. The lock only
/// decides how soon a job whose receiver died is delivered again: a running job keeps
/// its lock either way, renewed at half its term (`keyturn dev`'s pump, as the Functions
/// host renews it in Azure), and what keeps two instances off one object is the rotation's
/// lease, not the lock. Locally the receiver that dies is `keyturn dev` itself, killed by
/// its user, and the next `keyturn dev` should pick its jobs up within a minute rather
/// than stall its demo for five; in Azure another instance takes the job, and a longer
/// lock spares it a redelivery during a slow Graph call.
pub(crate) const DEFAULT_LOCK_DURATION: TimeDelta = TimeDelta::seconds(60);

/// The rotation queue's `MaxDeliveryCount`, as in Azure.
pub(crate) const DEFAULT_MAX_DELIVERY_COUNT: u32 = MAX_DELIVERY_COUNT;

/// The rotation queue's `DuplicateDetectionHistoryTimeWindow`, as in Azure.
pub(crate) const DEFAULT_DUPLICATE_DETECTION_WINDOW: TimeDelta = DUPLICATE_DETECTION_WINDOW;

/// Service Bus Standard tier's largest message (256 KB). Jobs are a few hundred bytes;
/// anything near this is a bug, refused before it reaches the file.
pub(crate) const MAX_BODY_LEN: usize = 256 * 1024;

/// The reason Service Bus records on a message dead-lettered for too many deliveries.
pub const MAX_DELIVERY_COUNT_EXCEEDED: &str = "MaxDeliveryCountExceeded";

/// Longest dead-letter reason or description kept (Service Bus caps each at 4096
/// characters); longer text is cut, never refused, so a dead-letter always succeeds.
pub(crate) const MAX_DEAD_LETTER_TEXT_LEN: usize = 4096;

/// How a queue behaves; the defaults are the rotation queue's as Azure has it: Service
/// Bus's lock duration, and the delivery count and duplicate window the Bicep deploys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSettings {
    pub lock_duration: TimeDelta,
    pub max_delivery_count: u32,
    pub duplicate_detection_window: TimeDelta,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            lock_duration: DEFAULT_LOCK_DURATION,
            max_delivery_count: DEFAULT_MAX_DELIVERY_COUNT,
            duplicate_detection_window: DEFAULT_DUPLICATE_DETECTION_WINDOW,
        }
    }
}

/// Why a queue operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    #[error("message {field} must be 1 to {MAX_MESSAGE_ID_LEN} characters, found {len}")]
    BadIdentifier { field: &'static str, len: usize },
    #[error("message body is {len} bytes, over the {MAX_BODY_LEN}-byte limit")]
    BodyTooLarge { len: usize },
    #[error("the queue name must not be empty")]
    EmptyQueueName,
    #[error("the message lock was lost: it expired or the message was settled already")]
    LockLost,
    #[error("the local queue holds an unreadable {field} in message {sequence}")]
    Corrupt { field: &'static str, sequence: i64 },
    #[error("local queue: {0}")]
    Store(#[from] StoreError),
}

impl QueueError {
    /// The port vocabulary: a lost lock is a conflict (another receiver has or had the
    /// message), bad input is invalid, and store failures keep their own mapping.
    pub(crate) fn into_port_error(self, context: &str) -> PortError {
        match self {
            QueueError::Store(error) => error.into_port_error(context),
            QueueError::LockLost => {
                PortError::new(FailureKind::Conflict, format!("{context}: {}", self))
            }
            other => PortError::invalid(format!("{context}: {other}")),
        }
    }
}

/// A lock on one received message: what settles it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LockToken(Uuid);

impl std::fmt::Display for LockToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

/// A message handed to a receiver under a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    pub lock_token: LockToken,
    /// Enqueue order, as Service Bus's `SequenceNumber`.
    pub sequence: i64,
    pub message_id: String,
    pub session_id: String,
    pub content_type: String,
    pub body: Vec<u8>,
    /// 1 on the first delivery, as Service Bus counts.
    pub delivery_count: u32,
    pub enqueued_at: DateTime<Utc>,
    pub locked_until: DateTime<Utc>,
}

/// A dead-lettered message, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub sequence: i64,
    pub message_id: String,
    pub session_id: String,
    pub body: Vec<u8>,
    pub delivery_count: u32,
    pub reason: String,
    pub description: Option<String>,
    pub dead_lettered_at: DateTime<Utc>,
}

/// What became of a sent message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    Enqueued {
        sequence: i64,
    },
    /// A message with the same `MessageId` was sent within the duplicate-detection
    /// window; this one was dropped.
    Duplicate,
}

/// One named queue on a [`LocalStore`]. Cheap to clone; clones and other processes on
/// the same file share the queue.
#[derive(Debug, Clone)]
pub struct LocalQueue {
    store: LocalStore,
    name: String,
    settings: QueueSettings,
    clock: Clock,
}

impl LocalQueue {
    /// The queue `name` (for example `rotations`). `clock` stamps messages sent through
    /// the [`JobQueue`] port; every other operation takes `now` itself.
    pub fn new(
        store: LocalStore,
        name: &str,
        settings: QueueSettings,
        clock: Clock,
    ) -> Result<Self, QueueError> {
        let name = name.trim();
        if name.is_empty() {
            return Err(QueueError::EmptyQueueName);
        }
        Ok(Self {
            store,
            name: name.to_owned(),
            settings,
            clock,
        })
    }

    pub(crate) fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    /// Enqueues `message` as of `now`, unless its `MessageId` was seen within the
    /// duplicate-detection window.
    pub async fn send_at(
        &self,
        message: &OutgoingMessage,
        now: DateTime<Utc>,
    ) -> Result<SendOutcome, QueueError> {
        check_identifier("MessageId", &message.message_id)?;
        check_identifier("SessionId", &message.session_id)?;
        if message.body.len() > MAX_BODY_LEN {
            return Err(QueueError::BodyTooLarge {
                len: message.body.len(),
            });
        }
        let queue = self.name.clone();
        let window = self.settings.duplicate_detection_window;
        let message = message.clone();
        let now_ms = now.timestamp_millis();
        let forget_before = (now - window).timestamp_millis();
        let visible_at = message
            .scheduled_enqueue
            .map_or(now_ms, |at| at.timestamp_millis().max(now_ms));
        let outcome = self
            .store
            .write(move |tx| {
                tx.execute(
                    "DELETE FROM queue_message_ids WHERE queue = ?1 AND first_seen <= ?2",
                    params![queue, forget_before],
                )
                .map_err(StoreError::sqlite("forgetting old message ids"))?;
                let seen: Option<i64> = tx
                    .query_row(
                        "SELECT first_seen FROM queue_message_ids WHERE queue = ?1 AND message_id = ?2",
                        params![queue, message.message_id],
                        |row| row.get(0),
                    )
                    .optional()
                    .map_err(StoreError::sqlite("checking for a duplicate message id"))?;
                if seen.is_some() {
                    return Ok(SendOutcome::Duplicate);
                }
                tx.execute(
                    "INSERT INTO queue_message_ids (queue, message_id, first_seen) VALUES (?1, ?2, ?3)",
                    params![queue, message.message_id, now_ms],
                )
                .map_err(StoreError::sqlite("recording a message id"))?;
                tx.execute(
                    "INSERT INTO queue_messages \
                     (queue, message_id, session_id, content_type, body, enqueued_at, visible_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        queue,
                        message.message_id,
                        message.session_id,
                        message.content_type,
                        message.body,
                        now_ms,
                        visible_at
                    ],
                )
                .map_err(StoreError::sqlite("enqueuing a message"))?;
                Ok(SendOutcome::Enqueued {
                    sequence: tx.last_insert_rowid(),
                })
            })
            .await?;
        Ok(outcome)
    }

    /// Locks and returns the oldest message that is due, not locked, and whose session
    /// no other receiver holds; `None` when there is none. Messages that have used up
    /// their deliveries are dead-lettered on the way.
    pub async fn receive(&self, now: DateTime<Utc>) -> Result<Option<ReceivedMessage>, QueueError> {
        let queue = self.name.clone();
        let settings = self.settings;
        self.store
            .write(move |tx| receive_in(tx, &queue, settings, now))
            .await
            .map_err(QueueError::from)?
    }

    /// Ends every lock on this queue now, as if each had expired: its message is delivered
    /// again (delivery count + 1, dead-lettered past the maximum) and its session freed.
    /// Only for a receiver that knows no other receiver is alive (local mode holds the
    /// data directory's exclusive lock), so the locks of a crashed run need not be waited
    /// out. Returns how many message locks ended.
    pub async fn expire_locks(&self, now: DateTime<Utc>) -> Result<usize, QueueError> {
        let queue = self.name.clone();
        let now_ms = now.timestamp_millis();
        let expired = self
            .store
            .write(move |tx| {
                let expired = tx
                    .execute(
                        "UPDATE queue_messages SET locked_until = ?2 \
                         WHERE queue = ?1 AND lock_token IS NOT NULL AND dead_lettered_at IS NULL \
                         AND locked_until > ?2",
                        params![queue, now_ms],
                    )
                    .map_err(StoreError::sqlite("expiring message locks"))?;
                tx.execute(
                    "DELETE FROM queue_sessions WHERE queue = ?1",
                    params![queue],
                )
                .map_err(StoreError::sqlite("expiring session locks"))?;
                Ok(expired)
            })
            .await?;
        Ok(expired)
    }

    /// Extends the lock of a message still held to `now` plus the lock duration; the
    /// session's lock moves with it.
    pub async fn renew_lock(
        &self,
        token: LockToken,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, QueueError> {
        let until = now + self.settings.lock_duration;
        let (now_ms, until_ms) = (now.timestamp_millis(), until.timestamp_millis());
        let token_text = token.to_string();
        let renewed = self
            .store
            .write(move |tx| {
                let changed = tx
                    .execute(
                        "UPDATE queue_messages SET locked_until = ?2 \
                         WHERE lock_token = ?1 AND locked_until > ?3",
                        params![token_text, until_ms, now_ms],
                    )
                    .map_err(StoreError::sqlite("renewing a message lock"))?;
                if changed != 1 {
                    // A lost lock must not revive its session's lock.
                    return Ok(false);
                }
                tx.execute(
                    "UPDATE queue_sessions SET locked_until = ?2 WHERE lock_token = ?1",
                    params![token_text, until_ms],
                )
                .map_err(StoreError::sqlite("renewing a session lock"))?;
                Ok(true)
            })
            .await?;
        if renewed {
            Ok(until)
        } else {
            Err(QueueError::LockLost)
        }
    }

    /// Settles a message as done: it is deleted.
    pub async fn complete(&self, token: LockToken, now: DateTime<Utc>) -> Result<(), QueueError> {
        self.settle(token, now, Settlement::Complete).await
    }

    /// Releases a message for redelivery (or dead-letters it if it has used up its
    /// deliveries).
    pub async fn abandon(&self, token: LockToken, now: DateTime<Utc>) -> Result<(), QueueError> {
        self.settle(token, now, Settlement::Abandon).await
    }

    /// Moves a message to the dead-letter queue with `reason` (and an optional
    /// description), as a receiver does for a job that can never succeed.
    pub async fn dead_letter(
        &self,
        token: LockToken,
        reason: &str,
        description: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        let reason = truncated(reason);
        let description = description.map(truncated);
        self.settle(token, now, Settlement::DeadLetter(reason, description))
            .await
    }

    async fn settle(
        &self,
        token: LockToken,
        now: DateTime<Utc>,
        settlement: Settlement,
    ) -> Result<(), QueueError> {
        let max = self.settings.max_delivery_count;
        let token_text = token.to_string();
        let now_ms = now.timestamp_millis();
        let settled = self
            .store
            .write(move |tx| {
                let held: Option<(i64, i64)> = tx
                    .query_row(
                        "SELECT sequence, delivery_count FROM queue_messages \
                         WHERE lock_token = ?1 AND locked_until > ?2 AND dead_lettered_at IS NULL",
                        params![token_text, now_ms],
                        |row| Ok((row.get(0)?, row.get(1)?)),
                    )
                    .optional()
                    .map_err(StoreError::sqlite("finding a locked message"))?;
                let Some((sequence, delivery_count)) = held else {
                    return Ok(false);
                };
                release_session(tx, &token_text)?;
                match settlement {
                    Settlement::Complete => {
                        tx.execute("DELETE FROM queue_messages WHERE sequence = ?1", [sequence])
                            .map_err(StoreError::sqlite("completing a message"))?;
                    }
                    Settlement::Abandon if delivery_count >= i64::from(max) => {
                        dead_letter_row(
                            tx,
                            sequence,
                            MAX_DELIVERY_COUNT_EXCEEDED,
                            Some(&exhausted_description(max)),
                            now_ms,
                        )?;
                    }
                    Settlement::Abandon => {
                        tx.execute(
                            "UPDATE queue_messages SET lock_token = NULL, locked_until = NULL \
                             WHERE sequence = ?1",
                            [sequence],
                        )
                        .map_err(StoreError::sqlite("abandoning a message"))?;
                    }
                    Settlement::DeadLetter(reason, description) => {
                        dead_letter_row(tx, sequence, &reason, description.as_deref(), now_ms)?;
                    }
                }
                Ok(true)
            })
            .await?;
        if settled {
            Ok(())
        } else {
            Err(QueueError::LockLost)
        }
    }

    /// Every dead-lettered message, oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError> {
        let queue = self.name.clone();
        self.store
            .call(move |connection| {
                let mut statement = connection
                    .prepare(
                        "SELECT sequence, message_id, session_id, body, delivery_count, \
                         dead_letter_reason, dead_letter_description, dead_lettered_at \
                         FROM queue_messages WHERE queue = ?1 AND dead_lettered_at IS NOT NULL \
                         ORDER BY sequence",
                    )
                    .map_err(StoreError::sqlite("listing dead letters"))?;
                let rows = statement
                    .query_map([&queue], |row| {
                        Ok((
                            row.get::<_, i64>(0)?,
                            row.get::<_, String>(1)?,
                            row.get::<_, String>(2)?,
                            row.get::<_, Vec<u8>>(3)?,
                            row.get::<_, i64>(4)?,
                            row.get::<_, Option<String>>(5)?,
                            row.get::<_, Option<String>>(6)?,
                            row.get::<_, i64>(7)?,
                        ))
                    })
                    .map_err(StoreError::sqlite("listing dead letters"))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(StoreError::sqlite("listing dead letters"))?;
                Ok(rows)
            })
            .await?
            .into_iter()
            .map(
                |(sequence, message_id, session_id, body, count, reason, description, at)| {
                    Ok(DeadLetter {
                        sequence,
                        message_id,
                        session_id,
                        body,
                        delivery_count: count_of(count, sequence)?,
                        reason: reason.unwrap_or_default(),
                        description,
                        dead_lettered_at: time_of(at, "dead_lettered_at", sequence)?,
                    })
                },
            )
            .collect()
    }

    /// Makes every scheduled message due at `now` (locked ones stay locked). For a host
    /// that knows the work a schedule waits for is done: local mode, once a sweep's jobs
    /// have all run, takes the snapshot scheduled for later. Returns how many moved.
    pub async fn bring_forward(&self, now: DateTime<Utc>) -> Result<usize, QueueError> {
        let queue = self.name.clone();
        let now_ms = now.timestamp_millis();
        let moved = self
            .store
            .write(move |tx| {
                tx.execute(
                    "UPDATE queue_messages SET visible_at = ?2 \
                     WHERE queue = ?1 AND dead_lettered_at IS NULL AND visible_at > ?2",
                    params![queue, now_ms],
                )
                .map_err(StoreError::sqlite("bringing scheduled messages forward"))
            })
            .await?;
        Ok(moved)
    }

    /// How many messages are active (due or not, locked or not), not dead-lettered.
    pub async fn active_count(&self) -> Result<u64, QueueError> {
        let queue = self.name.clone();
        let count: i64 = self
            .store
            .call(move |connection| {
                connection
                    .query_row(
                        "SELECT COUNT(*) FROM queue_messages \
                         WHERE queue = ?1 AND dead_lettered_at IS NULL",
                        [&queue],
                        |row| row.get(0),
                    )
                    .map_err(StoreError::sqlite("counting messages"))
            })
            .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// The earliest time after `now` at which a message that cannot be received now
    /// (scheduled, or locked) may become receivable; `None` when nothing is waiting. A
    /// pump sleeps until then instead of polling.
    pub async fn next_due(&self, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, QueueError> {
        let queue = self.name.clone();
        let now_ms = now.timestamp_millis();
        let next: Option<i64> = self
            .store
            .call(move |connection| {
                connection
                    .query_row(
                        "SELECT MIN(MAX(visible_at, COALESCE(locked_until, 0))) FROM queue_messages \
                         WHERE queue = ?1 AND dead_lettered_at IS NULL \
                         AND MAX(visible_at, COALESCE(locked_until, 0)) > ?2",
                        params![queue, now_ms],
                        |row| row.get(0),
                    )
                    .map_err(StoreError::sqlite("finding the next due message"))
            })
            .await?;
        next.map(|ms| time_of(ms, "visible_at", 0)).transpose()
    }
}

#[async_trait::async_trait]
impl JobQueue for LocalQueue {
    async fn send(&self, message: &OutgoingMessage) -> Result<(), PortError> {
        self.send_at(message, self.clock.now())
            .await
            .map(|_| ())
            .map_err(|error| error.into_port_error("sending to the local queue"))
    }
}

enum Settlement {
    Complete,
    Abandon,
    DeadLetter(String, Option<String>),
}

struct Candidate {
    sequence: i64,
    message_id: String,
    session_id: String,
    content_type: String,
    body: Vec<u8>,
    delivery_count: i64,
    enqueued_at: i64,
    lock_token: Option<String>,
}

fn receive_in(
    tx: &Transaction<'_>,
    queue: &str,
    settings: QueueSettings,
    now: DateTime<Utc>,
) -> Result<Result<Option<ReceivedMessage>, QueueError>, StoreError> {
    let now_ms = now.timestamp_millis();
    // A session lock that outlived its message's lock (its holder died) is stale.
    tx.execute(
        "DELETE FROM queue_sessions WHERE queue = ?1 AND locked_until <= ?2",
        params![queue, now_ms],
    )
    .map_err(StoreError::sqlite("expiring session locks"))?;
    loop {
        let candidate = tx
            .query_row(
                "SELECT m.sequence, m.message_id, m.session_id, m.content_type, m.body, \
                 m.delivery_count, m.enqueued_at, m.lock_token \
                 FROM queue_messages m \
                 WHERE m.queue = ?1 AND m.dead_lettered_at IS NULL AND m.visible_at <= ?2 \
                 AND (m.locked_until IS NULL OR m.locked_until <= ?2) \
                 AND NOT EXISTS (SELECT 1 FROM queue_sessions s \
                     WHERE s.queue = m.queue AND s.session_id = m.session_id) \
                 ORDER BY m.sequence LIMIT 1",
                params![queue, now_ms],
                |row| {
                    Ok(Candidate {
                        sequence: row.get(0)?,
                        message_id: row.get(1)?,
                        session_id: row.get(2)?,
                        content_type: row.get(3)?,
                        body: row.get(4)?,
                        delivery_count: row.get(5)?,
                        enqueued_at: row.get(6)?,
                        lock_token: row.get(7)?,
                    })
                },
            )
            .optional()
            .map_err(StoreError::sqlite("finding the next message"))?;
        let Some(candidate) = candidate else {
            return Ok(Ok(None));
        };
        if candidate.delivery_count >= i64::from(settings.max_delivery_count) {
            // Its last delivery's lock expired unsettled: the receiver died or hung.
            if let Some(token) = &candidate.lock_token {
                release_session(tx, token)?;
            }
            dead_letter_row(
                tx,
                candidate.sequence,
                MAX_DELIVERY_COUNT_EXCEEDED,
                Some(&exhausted_description(settings.max_delivery_count)),
                now_ms,
            )?;
            continue;
        }
        let token = LockToken(Uuid::new_v4());
        let locked_until = now + settings.lock_duration;
        let delivery_count = candidate.delivery_count + 1;
        tx.execute(
            "UPDATE queue_messages SET delivery_count = ?2, lock_token = ?3, locked_until = ?4 \
             WHERE sequence = ?1",
            params![
                candidate.sequence,
                delivery_count,
                token.to_string(),
                locked_until.timestamp_millis()
            ],
        )
        .map_err(StoreError::sqlite("locking a message"))?;
        tx.execute(
            "INSERT INTO queue_sessions (queue, session_id, lock_token, locked_until) \
             VALUES (?1, ?2, ?3, ?4)",
            params![
                queue,
                candidate.session_id,
                token.to_string(),
                locked_until.timestamp_millis()
            ],
        )
        .map_err(StoreError::sqlite("locking a session"))?;
        let message = (|| {
            Ok(ReceivedMessage {
                lock_token: token,
                sequence: candidate.sequence,
                delivery_count: count_of(delivery_count, candidate.sequence)?,
                enqueued_at: time_of(candidate.enqueued_at, "enqueued_at", candidate.sequence)?,
                message_id: candidate.message_id,
                session_id: candidate.session_id,
                content_type: candidate.content_type,
                body: candidate.body,
                locked_until,
            })
        })();
        return Ok(message.map(Some));
    }
}

fn release_session(tx: &Transaction<'_>, token: &str) -> Result<(), StoreError> {
    tx.execute("DELETE FROM queue_sessions WHERE lock_token = ?1", [token])
        .map_err(StoreError::sqlite("releasing a session lock"))?;
    Ok(())
}

fn dead_letter_row(
    tx: &Transaction<'_>,
    sequence: i64,
    reason: &str,
    description: Option<&str>,
    now_ms: i64,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE queue_messages SET lock_token = NULL, locked_until = NULL, \
         dead_lettered_at = ?2, dead_letter_reason = ?3, dead_letter_description = ?4 \
         WHERE sequence = ?1",
        params![sequence, now_ms, reason, description],
    )
    .map_err(StoreError::sqlite("dead-lettering a message"))?;
    Ok(())
}

fn exhausted_description(max: u32) -> String {
    format!("delivered {max} times without being completed")
}

fn check_identifier(field: &'static str, value: &str) -> Result<(), QueueError> {
    let len = value.chars().count();
    if (1..=MAX_MESSAGE_ID_LEN).contains(&len) {
        Ok(())
    } else {
        Err(QueueError::BadIdentifier { field, len })
    }
}

fn truncated(text: &str) -> String {
    text.chars().take(MAX_DEAD_LETTER_TEXT_LEN).collect()
}

fn count_of(count: i64, sequence: i64) -> Result<u32, QueueError> {
    u32::try_from(count).map_err(|_| QueueError::Corrupt {
        field: "delivery_count",
        sequence,
    })
}

fn time_of(ms: i64, field: &'static str, sequence: i64) -> Result<DateTime<Utc>, QueueError> {
    DateTime::from_timestamp_millis(ms).ok_or(QueueError::Corrupt { field, sequence })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str) -> OutgoingMessage {
        OutgoingMessage {
            message_id: id.into(),
            session_id: "session".into(),
            scheduled_enqueue: None,
            content_type: "application/json",
            body: b"{}".to_vec(),
        }
    }

    #[tokio::test]
    async fn identifiers_outside_service_bus_limits_are_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = LocalStore::open(dir.path().join("keyturn.db")).expect("open");
        let queue = LocalQueue::new(store, "jobs", QueueSettings::default(), Clock::system())
            .expect("queue");
        let now = Utc::now();

        let empty = queue.send_at(&message(""), now).await;
        let long = queue
            .send_at(&message(&"x".repeat(MAX_MESSAGE_ID_LEN + 1)), now)
            .await;
        let mut big = message("big");
        big.body = vec![b' '; MAX_BODY_LEN + 1];
        let too_big = queue.send_at(&big, now).await;

        assert!(matches!(
            empty,
            Err(QueueError::BadIdentifier {
                field: "MessageId",
                len: 0
            })
        ));
        assert!(matches!(long, Err(QueueError::BadIdentifier { .. })));
        assert!(matches!(too_big, Err(QueueError::BodyTooLarge { .. })));
        assert_eq!(queue.active_count().await.expect("count"), 0);
    }

    #[test]
    fn an_empty_queue_name_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = LocalStore::open(dir.path().join("keyturn.db")).expect("open");
        assert!(matches!(
            LocalQueue::new(store, "  ", QueueSettings::default(), Clock::system()),
            Err(QueueError::EmptyQueueName)
        ));
    }

    #[test]
    fn a_lost_lock_is_a_conflict_at_the_port() {
        let error = QueueError::LockLost.into_port_error("completing");
        assert_eq!(error.kind, FailureKind::Conflict);
    }
}
