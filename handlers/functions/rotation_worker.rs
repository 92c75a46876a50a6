//! `RotationWorker`: rotation jobs from the Service Bus queue. A job is a versioned JSON
//! message, decoded once by the host into a `rotation::job::Delivery`; a version this
//! build does not know, or a job that does not decode, is a permanent failure (completed
//! and audited), never a redelivery loop.

use serde::Serialize;

use crate::audit::Action;
use crate::domain::function::Function;
use crate::events::servicebus::ServiceBusMessage;
use crate::functions::{Context, FunctionError};
use crate::ports::audit::{AuditObject, Outcome};
use crate::rotation::job::Delivery;
use crate::rotation::run::{self, RunOutcome};

pub(crate) const NAME: Function = Function::RotationWorker;
/// The trigger binding's name in `function-definitions/RotationWorker/function.json`.
pub const BINDING: &str = "job";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JobReceipt {
    pub job_id: String,
    pub delivery_count: u32,
    #[serde(flatten)]
    pub outcome: RunOutcome,
}

pub(crate) async fn run(
    ctx: &Context,
    delivery: Delivery,
    message: ServiceBusMessage,
) -> Result<JobReceipt, FunctionError> {
    let reason = format!(
        "job {} delivery {}",
        delivery.job_id,
        message.delivery_count()
    );
    ctx.audit(
        Action::JobReceived,
        AuditObject::default(),
        Outcome::Succeeded,
        Some(&reason),
    )
    .await?;
    let job = delivery
        .job
        .map_err(|e| FunctionError::BadInput(e.to_string()))?;
    if message.message_id() != job.job_id.as_str() {
        tracing::debug!(message_id = message.message_id(), job_id = %job.job_id, "message id differs from the job id");
    }
    let outcome = run::run_delivery(
        ctx.rotation()?,
        &ctx.audit_scope()?,
        &job,
        message.delivery_count(),
    )
    .await?;
    Ok(JobReceipt {
        job_id: delivery.job_id,
        delivery_count: message.delivery_count(),
        outcome,
    })
}
