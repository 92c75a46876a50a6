//! The job queue: how rotation jobs are sent (Service Bus in Azure, the embedded queue in
//! local mode). Receiving is the trigger's business (the Functions host, or local mode's
//! pump), so the port only sends.

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};

use crate::ports::PortError;

/// Service Bus limits `MessageId` and `SessionId` to 128 characters.
pub const MAX_MESSAGE_ID_LEN: usize = 128;

/// How many times the rotation queue delivers a job before it dead-letters it, in Azure
/// (`maxDeliveryCount` in `infra/modules/servicebus.bicep`) and in local mode alike.
/// Transient failures retry through redelivery; a job that fails five times is parked
/// for an operator, and ExpirySweep plans it again.
pub const MAX_DELIVERY_COUNT: u32 = 5;

/// How long a delivered job stays locked to its receiver in Azure (`lockDuration` in
/// `infra/modules/servicebus.bicep`): Service Bus's longest, which the Functions host
/// renews while the handler runs. Local mode locks for less on purpose (see
/// `adapters::local::queue::DEFAULT_LOCK_DURATION`).
pub const LOCK_DURATION: TimeDelta = TimeDelta::minutes(5);

/// How long the rotation queue remembers a MessageId to drop a second job with it, in
/// Azure (`duplicateDetectionHistoryTimeWindow` in `infra/modules/servicebus.bicep`) and in
/// local mode alike. Job ids derive from the secret version and action, and Event Grid
/// redelivers an event for up to 24 hours: one day covers that horizon.
pub const DUPLICATE_DETECTION_WINDOW: TimeDelta = TimeDelta::days(1);

/// One message to send, with the broker properties keyturn relies on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// Deterministic idempotency key: the broker drops a second message with the same id
    /// within its duplicate-detection window.
    pub message_id: String,
    /// The object's identity: a session-enabled queue hands one session to one receiver
    /// at a time, so one object is never worked on twice at once.
    pub session_id: String,
    /// Not delivered before this time (`ScheduledEnqueueTimeUtc`).
    pub scheduled_enqueue: Option<DateTime<Utc>>,
    pub content_type: &'static str,
    /// JSON; never holds a secret value.
    pub body: Vec<u8>,
}

#[async_trait]
pub trait JobQueue: Send + Sync + std::fmt::Debug {
    async fn send(&self, message: &OutgoingMessage) -> Result<(), PortError>;
}
