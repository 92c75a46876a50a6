//! `DiscoveryWorker`: discovery jobs from the Service Bus queue. Each job reads one scope
//! (a subscription, a vault, a directory range, or the sweep's snapshot) as metadata into
//! the inventory and queues the jobs it fans out to. A message that is not a discovery
//! job is a permanent failure (completed and audited); a failing port is retried, the job
//! being idempotent.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::discovery::{DeliveryError, handle_delivery};
use crate::domain::function::Function;
use crate::events::servicebus::ServiceBusMessage;
use crate::functions::{Context, FunctionError};

pub(crate) const NAME: Function = Function::DiscoveryWorker;
/// The trigger binding's name in `function-definitions/DiscoveryWorker/function.json`.
pub const BINDING: &str = "job";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JobDone {
    pub message_id: String,
    pub delivery_count: u32,
    pub queued: usize,
    pub credentials: u64,
    pub vaults: u64,
    pub findings: u64,
}

/// The message body as the trigger binds it: the JSON job itself, or its text.
pub(crate) fn body(value: &Value) -> Vec<u8> {
    match value {
        Value::String(text) => text.as_bytes().to_vec(),
        other => other.to_string().into_bytes(),
    }
}

pub(crate) fn delivery_error(error: DeliveryError) -> FunctionError {
    match error {
        DeliveryError::Job(job) => FunctionError::BadInput(job.to_string()),
        DeliveryError::Port(port) => FunctionError::Port(port),
    }
}

pub(crate) async fn run(
    ctx: &Context,
    body: Vec<u8>,
    message: ServiceBusMessage,
) -> Result<JobDone, FunctionError> {
    let discovery = ctx.discovery()?;
    let report = handle_delivery(&discovery.engine, discovery.queue.as_ref(), &body, ctx.now)
        .await
        .map_err(delivery_error)?;
    tracing::info!(
        credentials = report.credentials,
        vaults = report.vaults,
        findings = report.findings,
        queued = report.follow_ups.len(),
        "discovery job done"
    );
    Ok(JobDone {
        message_id: message.message_id().to_owned(),
        delivery_count: message.delivery_count(),
        queued: report.follow_ups.len(),
        credentials: report.credentials,
        vaults: report.vaults,
        findings: report.findings,
    })
}
