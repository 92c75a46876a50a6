//! `RotationWorker`: rotation jobs from the Service Bus queue. A job is a versioned JSON
//! message; a version this build does not know is a permanent failure (completed and
//! audited), never a redelivery loop.

use serde::{Deserialize, Serialize};

use crate::events::servicebus::ServiceBusMessage;
use crate::functions::{Context, FunctionError};
use crate::ports::audit::{AuditObject, Outcome};

pub const NAME: &str = "RotationWorker";
/// The trigger binding's name in `function-definitions/RotationWorker/function.json`.
pub const BINDING: &str = "job";

/// The job schema versions this build understands.
pub const SUPPORTED_SCHEMA: u32 = 1;

/// The envelope every job carries, whatever its kind.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobEnvelope {
    pub schema: u32,
    pub job_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobReceipt {
    pub job_id: String,
    pub delivery_count: u32,
}

pub async fn run(
    ctx: &Context,
    job: JobEnvelope,
    message: ServiceBusMessage,
) -> Result<JobReceipt, FunctionError> {
    if job.schema != SUPPORTED_SCHEMA {
        return Err(FunctionError::BadInput(format!(
            "job schema {} is not supported (this build reads schema {SUPPORTED_SCHEMA})",
            job.schema
        )));
    }
    let reason = format!("job {} delivery {}", job.job_id, message.delivery_count());
    ctx.audit("job.received", AuditObject::default(), Outcome::Succeeded, Some(&reason))
        .await?;
    Ok(JobReceipt {
        job_id: job.job_id,
        delivery_count: message.delivery_count(),
    })
}
