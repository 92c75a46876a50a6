//! The job queue: how rotation jobs are sent (Service Bus in Azure, the embedded queue in
//! local mode). Receiving is the trigger's business (the Functions host, or local mode's
//! pump), so the port only sends.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::ports::PortError;

/// Service Bus limits `MessageId` and `SessionId` to 128 characters.
pub const MAX_MESSAGE_ID_LEN: usize = 128;

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
