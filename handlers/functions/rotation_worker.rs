//! `RotationWorker`: rotation jobs from the Service Bus queue. A job is a versioned JSON
//! message (`rotation::job`); a version this build does not know, or a job that does not
//! decode, is a permanent failure (completed and audited), never a redelivery loop.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::audit::Action;
use crate::events::servicebus::ServiceBusMessage;
use crate::functions::{Context, FunctionError};
use crate::ports::audit::{AuditObject, Outcome};
use crate::rotation::job::{self, Job};
use crate::rotation::run::{self, RunOutcome};

pub const NAME: &str = "RotationWorker";
/// The trigger binding's name in `function-definitions/RotationWorker/function.json`.
pub const BINDING: &str = "job";

/// The job schema versions this build understands.
pub const SUPPORTED_SCHEMA: u32 = job::SCHEMA;

/// The envelope every job carries, whatever its kind; the rest of the job (its action and
/// fields) is kept as it came and decoded once the schema is known.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobEnvelope {
    pub schema: u32,
    pub job_id: String,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

impl JobEnvelope {
    /// The whole job as JSON again.
    fn to_value(&self) -> Value {
        let mut job = self.rest.clone();
        job.insert("schema".into(), Value::from(self.schema));
        job.insert("jobId".into(), Value::from(self.job_id.clone()));
        Value::Object(job)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobReceipt {
    pub job_id: String,
    pub delivery_count: u32,
    #[serde(flatten)]
    pub outcome: RunOutcome,
}

pub async fn run(
    ctx: &Context,
    envelope: JobEnvelope,
    message: ServiceBusMessage,
) -> Result<JobReceipt, FunctionError> {
    if envelope.schema != SUPPORTED_SCHEMA {
        return Err(FunctionError::BadInput(format!(
            "job schema {} is not supported (this build reads schema {SUPPORTED_SCHEMA})",
            envelope.schema
        )));
    }
    let reason = format!(
        "job {} delivery {}",
        envelope.job_id,
        message.delivery_count()
    );
    ctx.audit(
        Action::JobReceived,
        AuditObject::default(),
        Outcome::Succeeded,
        Some(&reason),
    )
    .await?;
    let job =
        Job::from_json(&envelope.to_value()).map_err(|e| FunctionError::BadInput(e.to_string()))?;
    if message.message_id() != job.job_id.as_str() {
        tracing::debug!(message_id = message.message_id(), job_id = %job.job_id, "message id differs from the job id");
    }
    let outcome = run::run(ctx.rotation()?, &ctx.audit_scope()?, &job).await?;
    Ok(JobReceipt {
        job_id: envelope.job_id,
        delivery_count: message.delivery_count(),
        outcome,
    })
}
